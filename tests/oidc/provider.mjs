// A real OpenID Connect provider for the tests: the npm package oidc-provider
// (OpenID Certified), on loopback, with test accounts and claims from a JSON file.
//
//   node provider.mjs config.json
//
// config.json: {"issuer": "http://localhost:PORT", "port": PORT, "cookie_prefix": "umb",
//               "clients": [{client_id, client_secret, redirect_uris, post_logout_redirect_uris}],
//               "accounts": {"<subject>": {"claims": {...}}}}
//
// Its development login form (/interaction/<uid>) accepts any password; the
// login name is the account's subject (oidc-provider uses the account id as ``sub``). Consent is granted automatically. Prints
// "ready <issuer>" on stdout once listening. Never use this configuration in production.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const conf = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = conf.accounts;
const prefix = conf.cookie_prefix || 'op';

const provider = new Provider(conf.issuer, {
  clients: conf.clients.map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
    ...c,
  })),
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'staff'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    staff: ['is_staff'],
  },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...account.claims };
      },
    };
  },
  async loadExistingGrant(ctx) {
    // auto-consent: grant the client what it asked for
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) {
      const existing = await ctx.oidc.provider.Grant.find(grantId);
      if (existing) return existing;
    }
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.params.scope || 'openid');
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  cookies: {
    keys: ['daas-hub-tests-only'],
    names: { session: `${prefix}_session`, interaction: `${prefix}_interaction`, resume: `${prefix}_resume` },
  },
  ttl: { AuthorizationCode: 120, IdToken: 3600, AccessToken: 3600, Session: 3600, Interaction: 600, Grant: 3600 },
});
provider.proxy = false;

const server = provider.listen(conf.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${conf.issuer}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
