// A real OpenID provider (npm `oidc-provider`) for Atelier's single sign-on tests. Never use it
// for anything else: its login page accepts any password and its keys live in memory.
//
//   PORT=0 CLIENT_ID=atelier CLIENT_SECRET=s3cret REDIRECT_URI=http://... node server.js
//
// PORT (or the first argument) defaults to 0: the system picks a free port, and the line
// `listening on http://127.0.0.1:PORT` on stdout tells the tests which one (and that the provider
// is ready). TOKEN_AUTH_METHOD (client_secret_basic, the default, or client_secret_post) is the
// only client authentication the provider then advertises and accepts.
//
// Accounts: the devInteractions login page accepts any login name; only those below exist.

import { generateKeyPairSync, randomBytes } from "node:crypto";
import http from "node:http";

import Provider from "oidc-provider";

const ACCOUNTS = {
  alice: {
    email: "alice@example.com",
    email_verified: true,
    name: "Alice Martin",
    groups: ["atelier-admins", "staff"],
  },
  bob: {
    email: "bob@other.example",
    email_verified: true,
    name: "Bob Durand",
    groups: [],
  },
  carol: {
    email: "carol@example.com",
    email_verified: false,
    name: "Carol Petit",
    groups: ["staff"],
  },
  dave: {
    email: "Dave.Moreau@Mail.Example.COM",
    email_verified: true,
    name: "Dave Moreau",
  },
};

function setting(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} must be set`);
    process.exit(2);
  }
  return value;
}

const clientId = setting("CLIENT_ID");
const clientSecret = setting("CLIENT_SECRET");
const redirectUri = setting("REDIRECT_URI");
const tokenAuthMethod = process.env.TOKEN_AUTH_METHOD || "client_secret_basic";
const port = Number(process.argv[2] ?? process.env.PORT ?? 0);

// Fresh signing keys for every run, so nothing secret is committed.
function signingKey(type, options, kid) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: "jwk" }), kid, use: "sig" };
}

const jwks = {
  keys: [
    signingKey("rsa", { modulusLength: 2048 }, "rsa-1"),
    signingKey("ec", { namedCurve: "P-256" }, "ec-1"),
  ],
};

// oidc-provider's own `listen` binds every interface: serve its callback on loopback only, and
// create the provider once the port (part of the issuer) is known.
const server = http.createServer();
server.listen(port, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: tokenAuthMethod,
      },
    ],
    clientAuthMethods: [tokenAuthMethod],
    // HS256 is advertised on purpose: a relying party must not accept it with a public key.
    enabledJWA: {
      idTokenSigningAlgValues: ["RS256", "PS256", "ES256", "HS256"],
    },
    jwks,
    cookies: { keys: [randomBytes(32).toString("hex")] },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      userinfo: { enabled: true },
    },
    claims: {
      openid: ["sub"],
      email: ["email", "email_verified"],
      profile: ["name"],
      groups: ["groups"],
    },
    async findAccount(ctx, id) {
      const account = Object.hasOwn(ACCOUNTS, id) ? ACCOUNTS[id] : undefined;
      if (!account) {
        return undefined;
      }
      return {
        accountId: id,
        async claims() {
          return { sub: id, ...account };
        },
      };
    },
  });
  // oidc-provider takes client_secret_basic and client_secret_post alike, whatever the client
  // registered; insist on the one advertised so the tests see which one a relying party used.
  provider.use(async (ctx, next) => {
    if (ctx.method === "POST" && ctx.path === "/token") {
      const sentBasic = Boolean(ctx.get("authorization"));
      if (sentBasic !== (tokenAuthMethod === "client_secret_basic")) {
        ctx.status = 401;
        ctx.body = {
          error: "invalid_client",
          error_description: `this provider only takes ${tokenAuthMethod}`,
        };
        return;
      }
    }
    await next();
  });
  server.on("request", provider.callback());
  console.log(`listening on ${issuer}`);
});
