//! ARM reads: one resource, or a collection (`{"value": [...], "nextLink":
//! ...}`) followed page by page: VM listings for VM-name targets, subscriptions and bastion
//! hosts for `bastion discover`.

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
    let mut items = Vec::new();
    let mut next = Some(url);
    for _ in 0..MAX_PAGES {
        let Some(url) = next.take() else { break };
        let page: Page<T> = get(http, &url, token, what, MAX_PAGE_BYTES).await?;
        items.extend(page.value);
        next = page.next_link.filter(|l| !l.is_empty());
    }
    Ok(items)
}
