//! ARM collection reads (`{"value": [...], "nextLink": ...}`), followed
//! page by page: VM listings for VM-name targets, subscriptions and bastion
//! hosts for `bastion discover`.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::TunnelError;
use crate::error_body::error_message;
use crate::http::read_capped;
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

/// Every item of the ARM collection at `url`, read with `token`.
pub async fn list<T: DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
    token: &Secret,
    what: &'static str,
) -> Result<Vec<T>, TunnelError> {
    let mut items = Vec::new();
    let mut next = Some(url);
    for _ in 0..MAX_PAGES {
        let Some(url) = next.take() else { break };
        let response = http
            .get(&url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| TunnelError::unreachable(what, &e))?;
        let status = response.status();
        let body = read_capped(response, MAX_PAGE_BYTES)
            .await
            .map_err(|e| TunnelError::body(what, e))?;
        if !status.is_success() {
            return Err(TunnelError::Rejected {
                what,
                status: status.as_u16(),
                message: error_message(status.as_u16(), &body),
            });
        }
        let page: Page<T> = serde_json::from_slice(&body).map_err(|e| TunnelError::Rejected {
            what,
            status: status.as_u16(),
            message: format!("unexpected answer from ARM: {e}"),
        })?;
        items.extend(page.value);
        next = page.next_link.filter(|l| !l.is_empty());
    }
    Ok(items)
}
