// A fetch with a cookie jar, as a browser keeps one: every `Set-Cookie` of a response is
// stored (or, with `Max-Age=0`, dropped) and sent back on the next request.
export function cookieFetch() {
  const jar = new Map();
  const fetchWithJar = async (input, init = {}) => {
    const headers = new Headers(init.headers);
    if (jar.size > 0) {
      headers.set("cookie", [...jar].map(([name, value]) => `${name}=${value}`).join("; "));
    }
    const response = await fetch(input, { ...init, headers });
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(";");
      const at = pair.indexOf("=");
      const name = pair.slice(0, at).trim();
      const expired = attributes.some((a) => a.trim().toLowerCase() === "max-age=0");
      if (expired) jar.delete(name);
      else jar.set(name, pair.slice(at + 1));
    }
    return response;
  };
  return { fetchWithJar, jar };
}
