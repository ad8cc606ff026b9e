//! Who a token says it belongs to: the payload of an Entra access token (a
//! JWT), decoded without verifying it (Azure verifies; we only show who we
//! are). Only named claims are kept: the token itself is never stored,
//! logged or shown.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::secret::Secret;

/// Who the daemon is signed in as, as far as the token tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The Entra tenant (`tid`).
    pub tenant: String,
    /// A user's sign-in name (`upn`, `preferred_username`, `unique_name`), empty for apps.
    pub account: String,
    /// The application (client) id (`appid`, `azp`).
    pub app_id: String,
    /// Unix time in milliseconds at which the token expires (`exp`), 0 if absent.
    pub expires_at_ms: i64,
}

impl Identity {
    /// "account a@b (tenant t)" or "app 1234 (tenant t)".
    pub fn describe(&self) -> String {
        let who = if !self.account.is_empty() {
            format!("account {}", self.account)
        } else if !self.app_id.is_empty() {
            format!("app {}", self.app_id)
        } else {
            "an unnamed identity".to_string()
        };
        if self.tenant.is_empty() {
            who
        } else {
            format!("{who} (tenant {})", self.tenant)
        }
    }
}

#[derive(Deserialize, Default)]
struct Claims {
    tid: Option<String>,
    upn: Option<String>,
    preferred_username: Option<String>,
    unique_name: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
    exp: Option<i64>,
}

/// The identity in `token` when it is a JWT; `None` for opaque tokens.
pub fn identity(token: &Secret) -> Option<Identity> {
    let mut parts = token.expose().split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let first = |options: [Option<String>; 3]| {
        options
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
            .unwrap_or_default()
    };
    Some(Identity {
        tenant: claims.tid.unwrap_or_default(),
        account: first([claims.upn, claims.preferred_username, claims.unique_name]),
        app_id: first([claims.appid, claims.azp, None]),
        expires_at_ms: claims.exp.map_or(0, |s| s.saturating_mul(1000)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> Secret {
        Secret::new(format!(
            "eyJhbGciOiJub25lIn0.{}.sig",
            URL_SAFE_NO_PAD.encode(payload)
        ))
    }

    #[test]
    fn users_and_apps() {
        let user = identity(&jwt(
            r#"{"tid":"t1","upn":"me@example.com","appid":"04b07795","exp":1700000000}"#,
        ))
        .unwrap();
        assert_eq!(user.describe(), "account me@example.com (tenant t1)");
        assert_eq!(user.expires_at_ms, 1_700_000_000_000);
        let app = identity(&jwt(r#"{"tid":"t1","azp":"app-1"}"#)).unwrap();
        assert_eq!(app.describe(), "app app-1 (tenant t1)");
    }

    #[test]
    fn opaque_tokens_say_nothing() {
        assert_eq!(identity(&Secret::new("opaque")), None);
        assert_eq!(identity(&Secret::new("a.!!!.c")), None);
        assert_eq!(identity(&Secret::new("a.b.c.d")), None);
    }
}
