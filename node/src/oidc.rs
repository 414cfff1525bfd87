//! OpenID Connect sign-in as a relying party: the configured providers, the flows under way
//! (authorization code + PKCE, a nonce, and a `state` bound to the browser that started it),
//! and the checks on the way back (single-use state, the browser's binding cookie, the
//! `iss` parameter, then the ID token's signature, issuer, audience, expiry and nonce,
//! which `openidconnect` verifies).
//!
//! What the provider says about a person is returned as an [`Identity`]; which local
//! account it maps to is decided in `accounts`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    OAuth2TokenResponse, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;

/// A flow not finished within this is forgotten.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// Flows under way at most (each a few hundred bytes); beyond it the oldest are dropped.
const MAX_FLOWS: usize = 10_000;
/// Provider metadata (endpoints, keys) is fetched again after this.
const METADATA_TTL: Duration = Duration::from_secs(3600);

/// One identity provider, as configured (`[[oidc]]` in the config file).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Short id used in URLs (`/auth/oidc/<id>/…`): letters, digits, `-`.
    pub id: String,
    /// What the button says after "Sign in with".
    pub name: String,
    /// The issuer URL; its `/.well-known/openid-configuration` must name exactly it.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret, if the provider gave one (left out: a public client, PKCE only).
    pub client_secret: Option<String>,
    /// Scopes besides `openid`. Left out: `email` and `profile`.
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl ProviderConfig {
    /// Checks the id and the issuer URL; a message for a person if wrong.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 32
            && self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(format!("oidc provider id {:?}: use 1-32 lowercase letters, digits or '-'", self.id));
        }
        if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
            return Err(format!("oidc provider {}: issuer {:?} is not an http(s) URL", self.id, self.issuer));
        }
        IssuerUrl::new(self.issuer.clone()).map_err(|e| format!("oidc provider {}: issuer: {e}", self.id))?;
        Ok(())
    }
}

/// Why a sign-in through a provider failed; each prints as a sentence for the person.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// No provider with that id is configured.
    #[error("no such identity provider")]
    UnknownProvider,
    /// Discovery failed or named another issuer.
    #[error("the identity provider could not be reached or does not say it is {0}")]
    Discovery(String),
    /// The `state` is unknown, used already, expired, or from another browser.
    #[error("this sign-in link is not valid any more (or was started in another browser); start again")]
    BadState,
    /// The callback's `iss` names another issuer (a mix-up attack).
    #[error("the answer came from another issuer than the one asked")]
    WrongIssuer,
    /// The provider refused (the person cancelled, or it reported an error).
    #[error("the identity provider refused: {0}")]
    Refused(String),
    /// The code exchange failed (a used or forged code, a wrong PKCE verifier).
    #[error("the identity provider did not accept the sign-in code")]
    Exchange,
    /// The ID token is missing or does not verify.
    #[error("the identity provider's ID token did not verify: {0}")]
    IdToken(String),
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's id (as configured).
    pub provider: String,
    /// The provider's stable subject id.
    pub sub: String,
    /// The email address, only if the provider says it is verified.
    pub verified_email: Option<String>,
    /// A name to derive a local user name from (preferred_username, else email, else name).
    pub name_hint: Option<String>,
    /// Set if the flow was started by a logged-in user to link this identity to them.
    pub link_to: Option<String>,
    /// The invite code the flow was started with (a sign-up ticket on invite-only nodes).
    pub invite: Option<String>,
}

struct Flow {
    provider: String,
    binding: String,
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    started: Instant,
    link_to: Option<String>,
    invite: Option<String>,
}

/// The node's identity providers and the flows under way. Cheap to share behind an `Arc`.
pub struct Oidc {
    providers: Vec<ProviderConfig>,
    redirect_base: String,
    http: openidconnect::reqwest::Client,
    metadata: tokio::sync::Mutex<HashMap<String, (CoreProviderMetadata, Instant)>>,
    flows: Mutex<HashMap<String, Flow>>,
}

impl Oidc {
    /// Providers reachable by browsers of `public_url` (their redirect URI is
    /// `<public_url>/auth/oidc/<id>/callback`).
    pub fn new(providers: Vec<ProviderConfig>, public_url: &str) -> Self {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would let a provider's answer point the node anywhere.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client builds");
        Self {
            providers,
            redirect_base: public_url.trim_end_matches('/').to_owned(),
            http,
            metadata: Default::default(),
            flows: Default::default(),
        }
    }

    /// `(id, name)` of each provider, for the sign-in page.
    pub fn list(&self) -> Vec<(String, String)> {
        self.providers.iter().map(|p| (p.id.clone(), p.name.clone())).collect()
    }

    fn provider(&self, id: &str) -> Result<&ProviderConfig, OidcError> {
        self.providers.iter().find(|p| p.id == id).ok_or(OidcError::UnknownProvider)
    }

    /// The redirect URI registered for provider `id`.
    pub fn redirect_uri(&self, id: &str) -> String {
        format!("{}/auth/oidc/{id}/callback", self.redirect_base)
    }

    /// The provider's metadata, fetched (and its issuer checked by discovery) when absent
    /// or old.
    async fn metadata(&self, p: &ProviderConfig) -> Result<CoreProviderMetadata, OidcError> {
        let mut cache = self.metadata.lock().await;
        if let Some((m, at)) = cache.get(&p.id)
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(p.issuer.clone()).map_err(|e| OidcError::Discovery(e.to_string()))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http).await.map_err(|e| {
            tracing::warn!(provider = %p.id, error = %e, "OpenID discovery failed");
            OidcError::Discovery(p.issuer.clone())
        })?;
        cache.insert(p.id.clone(), (m.clone(), Instant::now()));
        Ok(m)
    }

    /// Starts a sign-in at provider `id` for the browser holding cookie value `binding`:
    /// the URL to send the browser to.
    pub async fn start(&self, id: &str, binding: &str, link_to: Option<String>, invite: Option<String>) -> Result<String, OidcError> {
        let p = self.provider(id)?;
        let client = CoreClient::from_provider_metadata(
            self.metadata(p).await?,
            ClientId::new(p.client_id.clone()),
            p.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(RedirectUrl::new(self.redirect_uri(&p.id)).map_err(|e| OidcError::Discovery(e.to_string()))?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .set_pkce_challenge(challenge);
        let scopes = p.scopes.clone().unwrap_or_else(|| vec!["email".into(), "profile".into()]);
        for s in scopes {
            req = req.add_scope(Scope::new(s));
        }
        let (url, state, nonce) = req.url();
        let flow = Flow { provider: p.id.clone(), binding: binding.to_owned(), verifier, nonce, started: Instant::now(), link_to, invite };
        let mut flows = self.flows.lock().expect("flows lock");
        flows.retain(|_, f| f.started.elapsed() < FLOW_TTL);
        if flows.len() >= MAX_FLOWS
            && let Some(oldest) = flows.iter().min_by_key(|(_, f)| f.started).map(|(k, _)| k.clone())
        {
            flows.remove(&oldest);
        }
        flows.insert(state.secret().clone(), flow);
        Ok(url.to_string())
    }

    /// Finishes a sign-in: the callback's parameters and the browser's binding cookie in,
    /// the verified identity out. The `state` is used up whatever happens.
    pub async fn finish(&self, id: &str, q: &Callback, binding: Option<&str>) -> Result<Identity, OidcError> {
        let p = self.provider(id)?;
        let flow = {
            let state = q.state.as_deref().ok_or(OidcError::BadState)?;
            let mut flows = self.flows.lock().expect("flows lock");
            flows.remove(state).ok_or(OidcError::BadState)?
        };
        let bound = binding.is_some_and(|b| crate::time::constant_eq(b, &flow.binding));
        if flow.provider != p.id || !bound || flow.started.elapsed() >= FLOW_TTL {
            return Err(OidcError::BadState);
        }
        if let Some(e) = &q.error {
            let detail = q.error_description.as_deref().unwrap_or(e);
            return Err(OidcError::Refused(detail.chars().take(200).collect()));
        }
        let m = self.metadata(p).await?;
        // RFC 9207: a provider that names itself in the answer must name the one asked.
        if let Some(iss) = &q.iss
            && iss.trim_end_matches('/') != m.issuer().as_str().trim_end_matches('/')
        {
            return Err(OidcError::WrongIssuer);
        }
        let code = q.code.clone().ok_or_else(|| OidcError::Refused("no code in the answer".into()))?;
        let client = CoreClient::from_provider_metadata(m, ClientId::new(p.client_id.clone()), p.client_secret.clone().map(ClientSecret::new))
            .set_redirect_uri(RedirectUrl::new(self.redirect_uri(&p.id)).map_err(|e| OidcError::Discovery(e.to_string()))?);
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| OidcError::Exchange)?
            .set_pkce_verifier(flow.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::info!(provider = %p.id, error = %e, "OpenID code exchange refused");
                OidcError::Exchange
            })?;
        let id_token = token.id_token().ok_or_else(|| OidcError::IdToken("none in the answer".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &flow.nonce)
            .map_err(|e| OidcError::IdToken(e.to_string()))?;
        let sub = claims.subject().clone();
        let mut verified_email =
            claims.email().filter(|_| claims.email_verified() == Some(true)).map(|e| e.as_str().to_ascii_lowercase());
        let mut name_hint = claims
            .preferred_username()
            .map(|u| u.as_str().to_owned())
            .or_else(|| claims.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned()));
        // Many providers put email and profile only in the userinfo answer, not the ID token.
        if (verified_email.is_none() || name_hint.is_none())
            && let Ok(req) = client.user_info(token.access_token().clone(), Some(sub.clone()))
        {
            match req.request_async::<openidconnect::EmptyAdditionalClaims, _, openidconnect::core::CoreGenderClaim>(&self.http).await {
                Ok(info) => {
                    let info: openidconnect::UserInfoClaims<openidconnect::EmptyAdditionalClaims, openidconnect::core::CoreGenderClaim> = info;
                    if verified_email.is_none() && info.email_verified() == Some(true) {
                        verified_email = info.email().map(|e| e.as_str().to_ascii_lowercase());
                    }
                    name_hint = name_hint
                        .or_else(|| info.preferred_username().map(|u| u.as_str().to_owned()))
                        .or_else(|| info.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned()));
                }
                Err(e) => tracing::info!(provider = %p.id, error = %e, "OpenID userinfo failed"),
            }
        }
        let name_hint = name_hint.or_else(|| verified_email.as_deref().and_then(|e| e.split('@').next()).map(str::to_owned));
        Ok(Identity {
            provider: p.id.clone(),
            sub: sub.as_str().to_owned(),
            verified_email,
            name_hint,
            link_to: flow.link_to,
            invite: flow.invite,
        })
    }

    /// Flows under way (for tests and metrics).
    pub fn flows(&self) -> usize {
        self.flows.lock().expect("flows lock").len()
    }
}

/// The query of the provider's redirect back.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    /// The authorization code.
    pub code: Option<String>,
    /// The state the flow started with.
    pub state: Option<String>,
    /// RFC 9207 issuer identifier.
    pub iss: Option<String>,
    /// An OAuth error code, when the provider refused.
    pub error: Option<String>,
    /// Its description.
    pub error_description: Option<String>,
}
