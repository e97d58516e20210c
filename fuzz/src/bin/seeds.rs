//! Writes a few valid inputs for every fuzz target into `fuzz/corpus/<target>/`, so each
//! run starts from inputs that reach deep into its parser instead of guessing the cookie
//! names, the payload layout or a signed token.
//!
//! `cargo run --bin seeds` (from `fuzz/`, any toolchain); an optional argument names
//! another output directory. Existing files of the same name are overwritten, nothing
//! else is touched.

use std::fs;
use std::path::{Path, PathBuf};

use tower_auth_session::fuzzing as f;

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(rest);
    out
}

/// The bytes `session_from_bytes` reads as a sane session: seven in-range times, a
/// generation, flags, id, user id, IP, user agent, nesting, then `fields` (JSON).
fn session_bytes(fields: &str, ip_binary: bool) -> Vec<u8> {
    nested_session_bytes(fields, ip_binary, 0)
}

/// [`session_bytes`] with the app fields nested `depth` more levels.
fn nested_session_bytes(fields: &str, ip_binary: bool, depth: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for offset in [600_000u64, 0, 1000, 0, 1000, 2000, 302_000] {
        out.push(4); // kind: around the fixed instant
        out.extend_from_slice(&(2_000_000_000 + offset).to_le_bytes());
    }
    out.push(1);
    out.extend_from_slice(&3u64.to_le_bytes());
    out.push(if ip_binary { 0b1110_1111 } else { 0b0000_1011 });
    for text in ["Xo3n9c1yTqkJb4mJ0p7R2w", "alice@example.com"] {
        out.push(text.len() as u8);
        out.extend_from_slice(text.as_bytes());
    }
    if ip_binary {
        out.extend_from_slice(&0x2001_0db8_0000_0000u64.to_le_bytes());
        out.extend_from_slice(&0x0000_0000_0000_0001u64.to_le_bytes());
    } else {
        out.push(11);
        out.extend_from_slice(b"203.0.113.7");
    }
    let ua = "Mozilla/5.0 (X11; Linux x86_64)";
    out.push(ua.len() as u8);
    out.extend_from_slice(ua.as_bytes());
    out.push(depth);
    out.extend_from_slice(fields.as_bytes());
    out
}

/// The inputs of the six findings fixed with issue 14, as `fuzz/regressions/` holds
/// them (written by `cargo run --bin seeds -- --regressions`).
fn regressions(root: &Path) {
    let [_, data_name, _] = f::cookie_names();
    let now_ms: i64 = 1_790_000_000_123;
    let created = now_ms - 3 * 86_400_000;
    let chrono_max_ms = f::chrono_max_ms();

    // 1. updated_at near chrono's maximum: refresh_due added update_age and panicked.
    let t = "cookie_cache";
    write(
        root,
        t,
        "updated_at_near_chrono_max",
        &with_mode(
            0,
            &f::unchecked_payload(chrono_max_ms - 1000, created, None),
        ),
    );
    let t = "redis_value";
    let value = format!(
        "1;3;{};3;sid5;alice[{created},{},0,0,1,null,null,{{}}]",
        now_ms + 86_400_000,
        chrono_max_ms - 1000 - created
    );
    write(
        root,
        t,
        "updated_at_near_chrono_max",
        &with_mode(0, value.as_bytes()),
    );

    // 2. A plain session_data next to a stray later chunk: the plain value was used.
    let t = "cookie_header";
    write(
        root,
        t,
        "plain_next_to_stray_chunk",
        &with_mode(0, format!("{data_name}=a; {data_name}.1=b").as_bytes()),
    );
    write(
        root,
        t,
        "stray_chunk_before_plain",
        &with_mode(0, format!("{data_name}.2=b\n{data_name}=a").as_bytes()),
    );

    // 3. Floats serde_json's default parser reads one ULP off.
    let floats = r#"{"f0":0.9999999999999999,"f1":1.2345678901234568e-300,"f2":1.0715660391465826e-75,"f3":1.0000000000000002,"f4":2.2250738585072014e-308}"#;
    write(
        root,
        "cookie_cache",
        "float_one_ulp_off",
        &with_mode(1, &session_bytes(floats, true)),
    );
    write(
        root,
        "redis_value",
        "float_one_ulp_off",
        &with_mode(1, &session_bytes(floats, false)),
    );

    // 4. App fields nested 200 deep: written, never read back. And the deepest accepted.
    for (target, mode) in [("cookie_cache", 1), ("redis_value", 1)] {
        write(
            root,
            target,
            "fields_nested_200_deep",
            &with_mode(mode, &nested_session_bytes(r#"{"a":1}"#, true, 199)),
        );
        write(
            root,
            target,
            "fields_nested_64_deep",
            &with_mode(mode, &nested_session_bytes(r#"{"a":[1]}"#, true, 62)),
        );
    }

    // 5. Origins with a colon in the host, a doubled port, a signed port.
    let t = "cross_site";
    write(
        root,
        t,
        "origin_colon_in_host",
        b"\x02https://4\norigin:HTTPS://4::443",
    );
    write(
        root,
        t,
        "origin_doubled_port",
        b"\x02https://x:443\norigin:https://x:443:443",
    );
    write(
        root,
        t,
        "origin_signed_port",
        b"\x02https://x:+443\norigin:https://x:+443",
    );

    // 6. A Redis value with times before 1970.
    let t = "redis_value";
    let value = format!("1;3;{};3;sid5;alice[-1000,0,0,0,1,null,null,{{}}]", now_ms);
    write(
        root,
        t,
        "created_before_1970",
        &with_mode(0, value.as_bytes()),
    );
    let value = format!(
        "1;3;{};3;sid5;alice[1000,-5000,0,0,1,null,null,{{}}]",
        now_ms
    );
    write(
        root,
        t,
        "updated_before_1970",
        &with_mode(0, value.as_bytes()),
    );

    println!("regressions written to {}", root.display());
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--regressions") {
        regressions(&Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions"));
        return;
    }
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let [token_name, data_name, dont_remember] = f::cookie_names();
    let token = f::signed_token([5u8; 32]);

    // 1. cookie_header
    let t = "cookie_header";
    write(
        root.as_path(),
        t,
        "plain",
        format!("\x05{token_name}={token}; {data_name}=abc; {dont_remember}=1").as_bytes(),
    );
    write(
        &root,
        t,
        "chunks",
        format!("\x42{data_name}.1=def; a=\"q\"\n{data_name}.0=abc; {data_name}.2=ghi").as_bytes(),
    );
    write(
        &root,
        t,
        "anomalies",
        &with_mode(
            0x81,
            format!(
                "{data_name}=a; {data_name}.1=b\n{token_name}=x; {token_name}=y; {data_name}.00=z"
            )
            .as_bytes(),
        ),
    );

    // 2. token
    let t = "token";
    write(&root, t, "cookie_value", &with_mode(10, token.as_bytes()));
    write(
        &root,
        t,
        "bearer",
        &with_mode(3, format!("Bearer {token}").as_bytes()),
    );
    write(
        &root,
        t,
        "bearer_case",
        &with_mode(
            77,
            format!("bEaReR   {}  ", f::signed_token([1u8; 32])).as_bytes(),
        ),
    );

    // 3. cookie_cache (mode 0: payload, 1: session round trips, 2: seal mutation)
    let t = "cookie_cache";
    let plain = session_bytes("{}", true);
    let fields = session_bytes(
        r#"{"plan":"pro","n":[1,2.5,{"x":null}],"f":0.30000000000000004}"#,
        false,
    );
    write(
        &root,
        t,
        "payload",
        &with_mode(0, &f::valid_payload(&plain).expect("valid")),
    );
    write(
        &root,
        t,
        "payload_fields",
        &with_mode(0, &f::valid_payload(&fields).expect("valid")),
    );
    write(&root, t, "session", &with_mode(1, &plain));
    write(&root, t, "session_fields", &with_mode(1, &fields));
    write(
        &root,
        t,
        "seal",
        &with_mode(2, &[17, 0, 0x20, 0, 1, 2, 3, 4]),
    );
    write(
        &root,
        t,
        "seal_encrypted",
        &with_mode(2, &[40, 0, 0x01, 1, 9, 9, 9]),
    );

    // 4. client_facts: flags, peer, trusted proxies, user agent, X-Forwarded-For lines
    let t = "client_facts";
    write(&root, t, "proxied", b"\x0010.0.0.1\n10.0.0.0/8, 192.168.0.0/16\nMozilla/5.0\n6.6.6.6, 203.0.113.7\n10.1.2.3:8080");
    write(
        &root,
        t,
        "ipv6",
        b"\x01::ffff:10.0.0.1\n10.0.0.0/8,2001:db8::/32\ncurl/8\n[2001:db8::1]:443, 2001:db8::2",
    );
    write(
        &root,
        t,
        "direct",
        b"\x02192.0.2.1:5000\n\n\xc3\xa9 agent\ngarbage",
    );

    // 5. cross_site: flags (bit 0 bearer, bits 1-2 trusted count), trusted lines, headers
    let t = "cross_site";
    write(&root, t, "trusted", b"\x02https://app.example.com/\norigin:HTTPS://App.Example.com:443\nsec-fetch-site:same-site");
    write(
        &root,
        t,
        "host",
        b"\x00origin:http://[::1]:8080\nhost:[::1]:8080",
    );
    write(
        &root,
        t,
        "cross",
        b"\x04http://a.example:8080\nhttps://b.example\nsec-fetch-site:Cross-Site\norigin:null",
    );
    write(&root, t, "bearer", b"\x01origin:https://evil.example");

    // 6. redis_value (mode 0: a value, 1: a session round trip)
    let t = "redis_value";
    write(
        &root,
        t,
        "value",
        &with_mode(0, &f::valid_redis_value(&plain).expect("valid")),
    );
    write(
        &root,
        t,
        "value_fields",
        &with_mode(0, &f::valid_redis_value(&fields).expect("valid")),
    );
    write(&root, t, "session", &with_mode(1, &fields));

    // 7. layer: flags (bit 0: from a trusted proxy), header lines; {T} token, {C} cache
    let t = "layer";
    write(
        &root,
        t,
        "cookie",
        format!("\x00cookie:{token_name}={{T}}; {data_name}={{C}}").as_bytes(),
    );
    write(
        &root,
        t,
        "store",
        format!(
            "\x01cookie:{token_name}={{T}}\nx-forwarded-for:203.0.113.9, 10.0.0.7\nuser-agent:fuzz"
        )
        .as_bytes(),
    );
    write(
        &root,
        t,
        "bearer",
        b"\x00authorization:Bearer {T}\norigin:https://evil.example",
    );
    write(&root, t, "forged", format!("\x00cookie:{token_name}={token}; {dont_remember}=1; {data_name}.0={{C}}; {data_name}.1=x").as_bytes());

    // 8. revocation_message
    let t = "revocation_message";
    write(
        &root,
        t,
        "both",
        f::revocation_message_seed("alice", "Xo3n9c1yTqkJb4mJ0p7R2w", 4).as_bytes(),
    );
    write(
        &root,
        t,
        "all",
        f::revocation_message_seed("u:1", "s", u64::MAX).as_bytes(),
    );

    println!("seeds written to {}", root.display());
}
