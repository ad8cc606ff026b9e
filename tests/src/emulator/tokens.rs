//! Access tokens: JWT-shaped (base64url header.payload.HMAC-SHA256) with a key drawn
//! at every start, so the emulator can verify what it minted and nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Audiences ARM accepts; which one a token carries follows the scope it was asked for.
pub(crate) const ARM_AUDIENCES: [&str; 2] = [
    "https://management.azure.com/",
    "https://management.core.windows.net/",
];

/// The payload of a minted token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) aud: String,
    pub(crate) iss: String,
    pub(crate) tid: String,
    pub(crate) oid: String,
    pub(crate) appid: String,
    pub(crate) iat: u64,
    pub(crate) nbf: u64,
    pub(crate) exp: u64,
    /// Entra's unique token id; here the mint's serial number, so the tokens
    /// minted so far can be revoked together.
    #[serde(default)]
    pub(crate) uti: u64,
    /// A user's sign-in name (tokens for the Azure CLI's user), absent for apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upn: Option<String>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("token is malformed or not signed by this emulator")]
    Invalid,
    #[error("token has expired")]
    Expired,
    #[error("token audience is not Azure Resource Manager")]
    WrongAudience,
    #[error("token has been revoked")]
    Revoked,
}

/// A minted token with its expiry (unix seconds).
pub(crate) struct Minted {
    pub(crate) token: String,
    pub(crate) expires_on: u64,
}

/// Mints and verifies tokens for every emulated tenant (the `tid` says which).
pub(crate) struct Signer {
    key: [u8; 32],
    /// Tokens minted so far: the next one's serial.
    minted: AtomicU64,
    /// Tokens with a serial below this are refused as revoked.
    revoked_below: AtomicU64,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Maps an accepted scope to its token audience; None for scopes Entra would refuse here.
pub(crate) fn audience_for_scope(scope: &str) -> Option<&'static str> {
    let resource = scope.strip_suffix(".default")?;
    let resource = resource.trim_end_matches('/');
    ARM_AUDIENCES
        .into_iter()
        .find(|aud| aud.trim_end_matches('/') == resource)
}

impl Signer {
    pub(crate) fn new() -> Self {
        Self {
            key: rand::random(),
            minted: AtomicU64::new(0),
            revoked_below: AtomicU64::new(0),
        }
    }

    /// Every token minted so far is refused from now on (a password reset,
    /// a revoked session); tokens minted later are not.
    pub(crate) fn revoke_minted(&self) {
        let minted = self.minted.load(Ordering::SeqCst);
        self.revoked_below.fetch_max(minted, Ordering::SeqCst);
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// A token of `tenant` for `subject` (an app), or for a signed-in user
    /// `upn` (what the Azure CLI holds).
    pub(crate) fn mint(
        &self,
        aud: &str,
        subject: &str,
        upn: Option<&str>,
        tenant: &str,
        lifetime: Duration,
    ) -> Minted {
        let now = unix_now();
        let claims = Claims {
            aud: aud.to_owned(),
            iss: format!("https://sts.windows.net/{tenant}/"),
            tid: tenant.to_owned(),
            oid: subject.to_owned(),
            appid: subject.to_owned(),
            iat: now,
            nbf: now,
            exp: now + lifetime.as_secs(),
            uti: self.minted.fetch_add(1, Ordering::SeqCst),
            upn: upn.map(str::to_owned),
        };
        let header = B64.encode(br#"{"typ":"JWT","alg":"HS256","kid":"bastion-emulator"}"#);
        // Serialising a struct of strings and integers cannot fail.
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        Minted {
            token: format!("{signing_input}.{sig}"),
            expires_on: claims.exp,
        }
    }

    /// Checks signature, expiry and that the token is meant for ARM.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let (_, payload) = signing_input.split_once('.').ok_or(TokenError::Invalid)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
        let payload = B64.decode(payload).map_err(|_| TokenError::Invalid)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
        if claims.exp <= unix_now() {
            return Err(TokenError::Expired);
        }
        if !ARM_AUDIENCES.contains(&claims.aud.as_str()) {
            return Err(TokenError::WrongAudience);
        }
        if claims.uti < self.revoked_below.load(Ordering::SeqCst) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }
}
