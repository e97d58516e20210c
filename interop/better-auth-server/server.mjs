// A real Better Auth 1.7.25 server for the crate's better-auth interop test
// (tests/integration/better_auth_interop.rs): email and password, PostgreSQL through a
// `pg` Pool in its own schema, and optionally Redis secondary storage with the official
// adapter's key layout (`<prefix><key>`, SET with EX). Configured by environment:
//   PORT, DATABASE_URL, BA_SCHEMA, BETTER_AUTH_SECRET, REDIS_URL (unset: no secondary
//   storage), BA_REDIS_PREFIX, BA_COOKIE_CACHE (off|compact|jwt|jwe),
//   BA_STORE_SESSION_IN_DATABASE (true|false), BA_UPDATE_AGE (seconds).
// Prints "listening on http://127.0.0.1:$PORT" when ready.
import http from "node:http";
import pg from "pg";
import Redis from "ioredis";
import { betterAuth } from "better-auth";
import { toNodeHandler } from "better-auth/node";
import { getMigrations } from "better-auth/db/migration";

const env = process.env;
const schema = env.BA_SCHEMA ?? "public";
const pool = new pg.Pool({
  connectionString: env.DATABASE_URL,
  options: `-c search_path="${schema}"`,
});
await pool.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);

let secondaryStorage;
if (env.REDIS_URL) {
  const redis = new Redis(env.REDIS_URL);
  const prefix = env.BA_REDIS_PREFIX ?? "better-auth:";
  secondaryStorage = {
    get: (key) => redis.get(prefix + key),
    set: (key, value, ttl) =>
      ttl ? redis.set(prefix + key, value, "EX", ttl) : redis.set(prefix + key, value),
    delete: (key) => redis.del(prefix + key),
  };
}

const cache = env.BA_COOKIE_CACHE ?? "off";
const options = {
  secret: env.BETTER_AUTH_SECRET,
  baseURL: `http://127.0.0.1:${env.PORT}`,
  database: pool,
  secondaryStorage,
  emailAndPassword: { enabled: true },
  session: {
    expiresIn: 604800,
    updateAge: Number(env.BA_UPDATE_AGE ?? 86400),
    storeSessionInDatabase: env.BA_STORE_SESSION_IN_DATABASE !== "false",
    cookieCache:
      cache === "off" ? { enabled: false } : { enabled: true, strategy: cache, maxAge: 300 },
  },
  rateLimit: { enabled: false },
};
const { runMigrations } = await getMigrations(options);
await runMigrations();
const auth = betterAuth(options);
const handler = toNodeHandler(auth);
http
  .createServer((req, res) => handler(req, res))
  .listen(Number(env.PORT), "127.0.0.1", () =>
    console.log(`listening on http://127.0.0.1:${env.PORT}`),
  );
