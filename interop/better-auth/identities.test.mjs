// Better Auth's `adminClient()` (impersonation) and `multiSessionClient()` against the
// example server started with SESSION_MULTI=3 (TAS_DEMO_MULTI_URL; .ci/run starts it).
// Cookies only: an impersonation keeps the admin's session aside in a cookie, and each
// account of a browser is a cookie of its own, so neither has a bearer-token form (Better
// Auth's plugins are cookie-based the same way).
import assert from "node:assert/strict";
import { test } from "node:test";
import { createAuthClient } from "better-auth/client";
import { adminClient, multiSessionClient } from "better-auth/client/plugins";
import { cookieFetch } from "./cookie-jar.mjs";

const baseURL = process.env.TAS_DEMO_MULTI_URL ?? "http://127.0.0.1:3918";

function browser() {
  const { fetchWithJar: customFetchImpl, jar } = cookieFetch();
  const client = createAuthClient({
    baseURL,
    fetchOptions: { customFetchImpl },
    plugins: [adminClient(), multiSessionClient()],
  });
  return { client, jar };
}

async function signIn(client, userId, fields) {
  const { data, error } = await client.$fetch("/sign-in", {
    method: "POST",
    body: fields ? { userId, fields } : { userId },
  });
  assert.equal(error, null, JSON.stringify(error));
  return data.session;
}

test("admin.impersonateUser and admin.stopImpersonating", async () => {
  const stamp = Date.now();
  const { client } = browser();
  const own = await signIn(client, `admin-${stamp}`, { role: "admin" });
  const target = `user-${stamp}`;
  await signIn(browser().client, target);

  const started = await client.admin.impersonateUser({ userId: target });
  assert.equal(started.error, null, JSON.stringify(started.error));
  const shown = await client.getSession();
  assert.equal(shown.data.user.id, target);
  assert.equal(shown.data.session.impersonatedBy, `admin-${stamp}`);

  const stopped = await client.admin.stopImpersonating();
  assert.equal(stopped.error, null, JSON.stringify(stopped.error));
  const back = await client.getSession();
  assert.equal(back.data.session.id, own.id);
  assert.equal(back.data.session.impersonatedBy, undefined);

  // A member may not impersonate.
  const member = browser().client;
  await signIn(member, `member-${stamp}`, { role: "member" });
  const refused = await member.admin.impersonateUser({ userId: target });
  assert.equal(refused.error.status, 403);
});

test("multiSession.listDeviceSessions, setActive and revoke", async () => {
  const stamp = Date.now();
  const { client } = browser();
  const work = await signIn(client, `work-${stamp}`);
  const home = await signIn(client, `home-${stamp}`);
  assert.equal((await client.getSession()).data.session.id, home.id);

  const listed = await client.multiSession.listDeviceSessions();
  assert.equal(listed.error, null, JSON.stringify(listed.error));
  assert.deepEqual(listed.data.map((d) => d.session.id).sort(), [work.id, home.id].sort());

  const switched = await client.multiSession.setActive({ sessionToken: work.id });
  assert.equal(switched.error, null, JSON.stringify(switched.error));
  assert.equal((await client.getSession()).data.session.id, work.id);

  const revoked = await client.multiSession.revoke({ sessionToken: work.id });
  assert.equal(revoked.error, null, JSON.stringify(revoked.error));
  assert.equal((await client.getSession()).data.session.id, home.id);
  assert.equal((await client.multiSession.listDeviceSessions()).data.length, 1);

  assert.equal((await client.signOut()).error, null);
  assert.equal((await client.getSession()).data, null);
});
