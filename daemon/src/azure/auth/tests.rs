//! The token cache: sharing, margins, refresh behind the caller, backoff.

use super::*;
use azure_core::credentials::{AccessToken, TokenRequestOptions};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug)]
struct Fake {
    calls: AtomicU32,
    lifetime: Duration,
    fail: bool,
}

#[async_trait::async_trait]
impl TokenCredential for Fake {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if self.fail {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "Please run 'az login' to setup account.",
            ));
        }
        let expires = azure_core::time::OffsetDateTime::now_utc() + self.lifetime;
        Ok(AccessToken::new(format!("token-{n}"), expires))
    }
}

fn cache(lifetime: Duration, fail: bool) -> (Arc<Fake>, Arc<TokenCache>) {
    let fake = Arc::new(Fake {
        calls: AtomicU32::new(0),
        lifetime,
        fail,
    });
    let cache = TokenCache::new(fake.clone(), CredentialKind::AzureCli, "s/.default".into());
    (fake, Arc::new(cache))
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let (fake, cache) = cache(Duration::from_secs(3600), false);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await.unwrap() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().expose(), "token-0");
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert!(cache.status().expires_at.is_some());
}

#[tokio::test]
async fn short_tokens_still_cache_and_refresh_before_expiry() {
    let (fake, cache) = cache(Duration::from_secs(4), false);
    cache.token().await.unwrap();
    cache.token().await.unwrap();
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        1,
        "a 4 s token is reused at once"
    );
    let cached = Cached {
        token: Secret::new("t"),
        obtained_at: SystemTime::now(),
        expires_at: SystemTime::now() + Duration::from_secs(4),
    };
    assert!(!cached.is_fresh(SystemTime::now() + Duration::from_millis(3100)));
    let long = Cached {
        token: Secret::new("t"),
        obtained_at: SystemTime::now(),
        expires_at: SystemTime::now() + Duration::from_secs(3600),
    };
    assert!(long.is_fresh(SystemTime::now() + Duration::from_secs(3600 - 301)));
    assert!(!long.is_fresh(SystemTime::now() + Duration::from_secs(3600 - 299)));
}

#[tokio::test]
async fn a_token_due_for_refresh_is_served_while_a_new_one_is_fetched() {
    let (fake, cache) = cache(Duration::from_secs(3600), false);
    // An hour's token with two minutes left: due (the margin is five),
    // still good to serve.
    cache.lock().token = Some(Cached {
        token: Secret::new("old"),
        obtained_at: SystemTime::now() - Duration::from_secs(3600 - 120),
        expires_at: SystemTime::now() + Duration::from_secs(120),
    });
    assert_eq!(cache.token().await.unwrap().expose(), "old");
    assert_eq!(cache.token().await.unwrap().expose(), "old");
    cache.refreshes.close();
    cache.refreshes.wait().await;
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "one refresh behind");
    assert_eq!(cache.token().await.unwrap().expose(), "token-0");
    // With less than a minute left, the caller waits for a new one.
    cache.lock().token = Some(Cached {
        token: Secret::new("expiring"),
        obtained_at: SystemTime::now() - Duration::from_secs(3600 - 30),
        expires_at: SystemTime::now() + Duration::from_secs(30),
    });
    assert_eq!(cache.token().await.unwrap().expose(), "token-1");
}

#[tokio::test]
async fn failure_is_shared_and_reported() {
    let (fake, cache) = cache(Duration::from_secs(3600), true);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await.unwrap_err() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().to_string().contains("az login"));
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert!(cache.status().error.unwrap().contains("azure-cli"));
    // A later caller tries again, once the retry delay has passed.
    cache.token().await.unwrap_err();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "within the delay");
    cache.retry_now();
    cache.token().await.unwrap_err();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failing_credential_is_retried_with_backoff() {
    let (fake, cache) = cache(Duration::from_secs(3600), true);
    let mut cache = Arc::into_inner(cache).unwrap();
    cache.first_retry_delay = Duration::from_millis(300);
    let cache = Arc::new(cache);
    // Many connections in a row while the login is broken: one request.
    for _ in 0..20 {
        cache.token().await.unwrap_err();
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    cache.token().await.unwrap_err();
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        2,
        "retried after the delay"
    );
    // The second failure doubles the delay (600 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    cache.token().await.unwrap_err();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "still backing off");
    tokio::time::sleep(Duration::from_millis(400)).await;
    cache.token().await.unwrap_err();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
}
