// Drives the example server with Better Auth's own client (`better-auth/client`), as a
// frontend would: once with cookies (a jar in front of fetch, as a browser keeps one) and
// once with a bearer token. The server is started by the caller (.ci/run, or by hand):
//   PORT=3917 DATABASE_URL=memory cargo run --example server
//   TAS_DEMO_URL=http://127.0.0.1:3917 npm test
import assert from "node:assert/strict";
import { test } from "node:test";
import { createAuthClient } from "better-auth/client";
import { cookieFetch } from "./cookie-jar.mjs";

const baseURL = process.env.TAS_DEMO_URL ?? "http://127.0.0.1:3917";

/** A client with cookies, and one that signs in the same user on a second device. */
function cookieClient() {
  const { fetchWithJar, jar } = cookieFetch();
  const client = createAuthClient({ baseURL, fetchOptions: { customFetchImpl: fetchWithJar } });
  return { client, jar };
}

/** A client that keeps no cookies and sends `Authorization: Bearer`. */
function bearerClient() {
  let token = "";
  const client = createAuthClient({
    baseURL,
    fetchOptions: {
      auth: { type: "Bearer", token: () => token },
      onSuccess: (ctx) => {
        const issued = ctx.response.headers.get("set-auth-token");
        if (issued) token = issued;
      },
    },
  });
  return { client, token: () => token };
}

async function signIn(client, userId, fields) {
  // Sign-in is the app's own route (a real app checks a password first).
  const { data, error } = await client.$fetch("/sign-in", {
    method: "POST",
    body: fields ? { userId, fields } : { userId },
  });
  assert.equal(error, null, JSON.stringify(error));
  return data.session;
}

for (const mode of ["cookies", "bearer"]) {
  test(`every session method of the client works (${mode})`, async () => {
    const make = mode === "cookies" ? cookieClient : bearerClient;
    const user = `interop-${mode}-${Date.now()}`;
    const laptop = make();
    const phone = make();
    const tablet = make();
    const session = await signIn(laptop.client, user, { role: "member" });
    await signIn(phone.client, user);
    await signIn(tablet.client, user);

    // getSession: session and user, as Better Auth's types promise.
    const got = await laptop.client.getSession();
    assert.equal(got.error, null);
    assert.equal(got.data.session.id, session.id);
    assert.equal(got.data.session.userId, user);
    assert.equal(got.data.session.role, "member");
    assert.equal(got.data.user.id, user);
    assert.equal(got.data.user.name, user);

    // listSessions: three devices, each with the `token` revokeSession takes back.
    const listed = await laptop.client.listSessions();
    assert.equal(listed.error, null);
    assert.equal(listed.data.length, 3);
    for (const item of listed.data) assert.equal(typeof item.token, "string");
    const phoneId = (await phone.client.getSession()).data.session.id;
    const phoneItem = listed.data.find((item) => item.id === phoneId);
    const revoked = await laptop.client.revokeSession({ token: phoneItem.token });
    assert.equal(revoked.error, null);
    assert.equal((await phone.client.getSession()).data, null);

    // updateSession: the new fields are what getSession shows.
    const updated = await laptop.client.updateSession({ theme: "dark", activeOrganizationId: "org_1" });
    assert.equal(updated.error, null, JSON.stringify(updated.error));
    const after = await laptop.client.getSession();
    assert.equal(after.data.session.theme, "dark");
    assert.equal(after.data.session.activeOrganizationId, "org_1");

    // A field the server decides with is not the browser's to set: 403, nothing written.
    const promoted = await laptop.client.updateSession({ role: "admin" });
    assert.equal(promoted.error.status, 403);
    assert.equal(typeof promoted.error.message, "string");
    assert.notEqual((await laptop.client.getSession()).data.session.role, "admin");

    // Errors carry `message`, which the client surfaces.
    const refused = await laptop.client.updateSession({ userId: "mallory" });
    assert.equal(refused.error.status, 400);
    assert.equal(typeof refused.error.message, "string");

    // revokeOtherSessions keeps this device, ends the tablet.
    assert.equal((await laptop.client.revokeOtherSessions()).error, null);
    assert.equal((await tablet.client.getSession()).data, null);
    assert.notEqual((await laptop.client.getSession()).data, null);

    // signOut ends it.
    const out = await laptop.client.signOut();
    assert.equal(out.error, null);
    assert.equal((await laptop.client.getSession()).data, null);
    const stale = await laptop.client.listSessions();
    assert.equal(stale.error.status, 401);
    assert.equal(typeof stale.error.message, "string");

    // revokeSessions ends every device of the user, this one included.
    const desk = make();
    await signIn(desk.client, user);
    assert.equal((await desk.client.revokeSessions()).error, null);
    assert.equal((await desk.client.getSession()).data, null);
  });
}
