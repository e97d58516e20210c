//! The built-in load generator: HTTP/1.1 over keep-alive TCP connections, one request in
//! flight on each, written straight on the socket.
//!
//! A full HTTP client would cost the generator's core about as much per request as the
//! bare route costs the server's, and a generator that saturates first flattens every
//! ratio towards 1. This one sends prebuilt request bytes and reads only the status line,
//! `Content-Length` and (at sign-in) `Set-Cookie`, much as `wrk` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Requests per connection before a measurement, so that pools, caches and the
/// connections themselves are warm.
const WARM_UP_REQUESTS: usize = 20;
/// How long past its deadline a measurement may run before it is abandoned.
const GRACE: Duration = Duration::from_secs(10);

pub(crate) struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    filled: usize,
}

/// What one response said that we care about.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) set_cookies: Vec<String>,
}

impl Connection {
    pub(crate) async fn open(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Self {
            stream,
            buffer: vec![0; 16 * 1024],
            filled: 0,
        })
    }

    /// Sends one complete request and reads one response (its body is skipped).
    pub(crate) async fn exchange(
        &mut self,
        request: &[u8],
        want_cookies: bool,
    ) -> Result<Reply, String> {
        self.stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let head_end = loop {
            if let Some(end) = find(&self.buffer[..self.filled], b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let (status, body_length, set_cookies) =
            parse_head(&self.buffer[..head_end], want_cookies)?;
        let total = head_end + body_length;
        if total > self.buffer.len() {
            return Err(format!(
                "response of {total} bytes is larger than the buffer"
            ));
        }
        while self.filled < total {
            self.fill().await?;
        }
        // One request in flight: anything past this response would be a protocol error,
        // but keep it rather than lose bytes.
        self.buffer.copy_within(total..self.filled, 0);
        self.filled -= total;
        Ok(Reply {
            status,
            set_cookies,
        })
    }

    async fn fill(&mut self) -> Result<(), String> {
        if self.filled == self.buffer.len() {
            return Err("response head larger than the buffer".into());
        }
        match self.stream.read(&mut self.buffer[self.filled..]).await {
            Ok(0) => Err("connection closed by the server".into()),
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Status, body length and (when asked) the `Set-Cookie` values of a response head.
fn parse_head(head: &[u8], want_cookies: bool) -> Result<(u16, usize, Vec<String>), String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line in {text:?}"))?;
    let mut body_length = 0;
    let mut set_cookies = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            body_length = value.parse().map_err(|_| "bad Content-Length")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".into());
        } else if want_cookies && name.eq_ignore_ascii_case("set-cookie") {
            set_cookies.push(value.to_owned());
        }
    }
    Ok((status, body_length, set_cookies))
}

pub(crate) fn get_request(path: &str, cookie: Option<&str>) -> Vec<u8> {
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie}\r\n").into_bytes()
}

/// Signs `users` users in and returns, for each, the `Cookie` header a browser would send
/// next: every cookie the response set and did not expire.
pub(crate) async fn sign_in(addr: SocketAddr, users: usize) -> Result<Vec<String>, String> {
    let mut connection = Connection::open(addr).await?;
    let mut cookies = Vec::with_capacity(users);
    for user in 0..users {
        let request = format!(
            "POST /sign-in?user=user{user} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        );
        let reply = connection.exchange(request.as_bytes(), true).await?;
        if reply.status != 200 {
            return Err(format!("sign-in answered {}", reply.status));
        }
        let pairs: Vec<&str> = reply
            .set_cookies
            .iter()
            .filter(|c| !c.contains("Max-Age=0"))
            .filter_map(|c| c.split(';').next())
            .collect();
        if pairs.is_empty() {
            return Err("sign-in set no cookie".into());
        }
        cookies.push(pairs.join("; "));
    }
    Ok(cookies)
}

/// Opens `count` connections and sends each a few requests, outside any measurement.
pub(crate) async fn prepare(
    addr: SocketAddr,
    count: usize,
    requests: &[Vec<u8>],
) -> Result<Vec<Connection>, String> {
    let mut connections = Vec::with_capacity(count);
    for index in 0..count {
        let mut connection = Connection::open(addr).await?;
        for step in 0..WARM_UP_REQUESTS {
            let request = &requests[(index + step) % requests.len()];
            let reply = connection.exchange(request, false).await?;
            if reply.status != 200 {
                return Err(format!("warm-up request answered {}", reply.status));
            }
        }
        connections.push(connection);
    }
    Ok(connections)
}

/// What a measurement saw.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Load {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
}

/// Drives every connection for `duration`, each cycling over `requests` (one per user);
/// a 200 counts as a request, anything else as an error.
pub(crate) async fn measure(
    connections: Vec<Connection>,
    requests: Arc<Vec<Vec<u8>>>,
    duration: Duration,
) -> Result<Load, String> {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(index, mut connection)| {
            let requests = Arc::clone(&requests);
            tokio::spawn(async move {
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut user = index;
                while Instant::now() < deadline {
                    user = (user + 1) % requests.len();
                    match connection.exchange(&requests[user], false).await {
                        Ok(reply) if reply.status == 200 => ok += 1,
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    let mut load = Load::default();
    let joined = tokio::time::timeout(duration + GRACE, async {
        for task in tasks {
            let (ok, errors) = task.await.map_err(|e| format!("load task: {e}"))?;
            load.requests += ok;
            load.errors += errors;
        }
        Ok::<_, String>(())
    })
    .await;
    match joined {
        Ok(result) => result?,
        Err(_) => return Err("the server stopped answering".into()),
    }
    load.elapsed = started.elapsed();
    Ok(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_parsing_reads_status_length_and_cookies() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nSet-Cookie: a=1; Path=/\r\nset-cookie: b=2\r\n\r\n";
        let (status, length, cookies) = parse_head(head, true).unwrap();
        assert_eq!((status, length), (200, 5));
        assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
        assert!(parse_head(head, false).unwrap().2.is_empty());
    }

    #[test]
    fn chunked_and_garbage_are_errors() {
        assert!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(parse_head(b"nonsense\r\n\r\n", false).is_err());
    }
}
