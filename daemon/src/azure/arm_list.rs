//! ARM reads: one resource, or a collection (`{"value": [...], "nextLink":
//! ...}`) followed page by page: VM listings for VM-name targets, subscriptions and bastion
//! hosts for `bastion discover`. A `nextLink` is followed only to where the
//! listing started (the configured `resource_manager`): the request carries
//! the bearer token, which must not go wherever an answer points.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::azure::http::read_capped;
use crate::azure::tenants::wanted_tenant;
use crate::error::AzureError;
use crate::secret::Secret;

/// ARM pages its listings (about 1000 items a page); past this many pages the
/// answer is cut rather than followed forever (a loop in `nextLink`).
const MAX_PAGES: usize = 50;
/// Largest page read: ARM pages hold up to ~1000 resources of a few KiB each;
/// anything bigger is not ARM answering (see `http::MAX_RESPONSE_BODY`).
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    next_link: Option<String>,
}

/// The resource group named in a resource id (ARM ids are case-insensitive).
pub fn resource_group_of(id: &str) -> Option<&str> {
    let mut parts = id.split('/');
    parts
        .by_ref()
        .find(|p| p.eq_ignore_ascii_case("resourceGroups"))?;
    parts.next()
}

/// `GET url` with `token`, the answer (at most `cap` bytes) parsed as `T`:
/// one ARM read, for single resources and collection pages alike.
pub async fn get<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: &Secret,
    what: &'static str,
    cap: usize,
) -> Result<T, AzureError> {
    let response = http
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(|e| AzureError::unreachable(what, &e))?;
    let status = response.status().as_u16();
    let body = read_capped(response, cap)
        .await
        .map_err(|e| e.into_azure(what))?;
    AzureError::parse_answer(what, status, &body, "unexpected answer from ARM").map_err(|e| {
        let wanted = match &e {
            AzureError::Rejected {
                status: 401,
                message,
                ..
            } => wanted_tenant(message).map(str::to_owned),
            _ => None,
        };
        // Not a 401 any more: a fresh token of the same tenant would not help.
        match wanted {
            Some(tenant) => AzureError::Precondition(format!(
                "{what}: the subscription belongs to tenant {tenant} and the token is from \
                 another one; sign in to it (`az login --tenant {tenant}`) or set \
                 `tenant_id = \"{tenant}\"` under this bastion's [bastions.NAME] in config.toml"
            )),
            None => e,
        }
    })
}

/// Every item of the ARM collection at `url`, read with `token`.
pub async fn list<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
    token: &Secret,
    what: &'static str,
) -> Result<Vec<T>, AzureError> {
    let origin = origin(&url);
    let mut items = Vec::new();
    let mut next = Some(url);
    for _ in 0..MAX_PAGES {
        let Some(url) = next.take() else { break };
        let page: Page<T> = get(http, &url, token, what, MAX_PAGE_BYTES).await?;
        items.extend(page.value);
        next = page.next_link.filter(|l| !l.is_empty());
        if let Some(link) = &next {
            let elsewhere = self::origin(link);
            if elsewhere != origin {
                return Err(AzureError::Precondition(format!(
                    "{what}: ARM's next page is on {elsewhere}, not {origin}; not followed, \
                     as the request would carry your token there"
                )));
            }
        }
    }
    Ok(items)
}

/// `scheme://host[:port]` of `url` (ASCII, so printable), or "an invalid URL".
fn origin(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| "an invalid URL".into(),
        |url| url.origin().ascii_serialization(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A plain-HTTP server answering every request with `body(its port)`;
    /// counts requests.
    async fn server(body: impl FnOnce(u16) -> String) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = body(port);
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (port, requests)
    }

    async fn list_from(port: u16) -> Result<Vec<u32>, AzureError> {
        let tls = crate::azure::http::tls_config(None).unwrap();
        list(
            &crate::azure::http::client(&tls).unwrap(),
            format!("http://127.0.0.1:{port}/subscriptions"),
            &Secret::new("the-bearer-token"),
            "listing",
        )
        .await
    }

    #[tokio::test]
    async fn a_next_link_to_another_host_is_not_followed() {
        let (elsewhere, stolen) = server(|_| r#"{"value": [2]}"#.into()).await;
        let (arm, _) = server(|_| {
            format!(r#"{{"value": [1], "nextLink": "http://localhost:{elsewhere}/steal"}}"#)
        })
        .await;
        let error = list_from(arm).await.unwrap_err().to_string();
        assert!(error.contains("http://localhost:"), "{error}");
        assert_eq!(stolen.load(Ordering::SeqCst), 0, "the token went elsewhere");
    }

    #[tokio::test]
    async fn next_links_to_the_same_host_are_followed_a_bounded_number_of_times() {
        let (arm, requests) = server(|port| {
            format!(r#"{{"value": [1], "nextLink": "http://127.0.0.1:{port}/again"}}"#)
        })
        .await;
        let items = list_from(arm).await.unwrap();
        assert_eq!(items.len(), MAX_PAGES);
        assert_eq!(requests.load(Ordering::SeqCst), MAX_PAGES);
    }
}
