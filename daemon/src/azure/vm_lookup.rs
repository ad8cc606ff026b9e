//! VM names → resource ids, through ARM's VM listing of a subscription (or
//! of one resource group), cached so that `connect myvm:22` costs no ARM
//! call on the hot path. Names compare case-insensitively, as ARM's do.
//! Instances of a (Uniform) scale set are not in that listing; ARM lists
//! them under their scale set, named `<set>_<instance id>`, so a name of
//! that shape not found among the VMs is looked for there.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::azure::arm_list;
use crate::error::{AzureError, RefusedToken};
use crate::secret::Secret;

/// The Microsoft.Compute API version whose VM listing we read.
const API_VERSION: &str = "2024-07-01";

/// How long a VM listing is trusted: VMs are renamed or moved rarely, a name
/// not in the listing is looked up afresh at once, and 5 minutes bounds how
/// long a deleted-and-recreated VM keeps its old id.
pub const VM_LISTING_TTL: Duration = Duration::from_secs(5 * 60);

/// Why a VM's (or a managed cluster's) name could not be turned into a resource id.
#[derive(Debug, thiserror::Error)]
pub enum VmLookupError {
    /// No VM of that name where we looked (the message says where).
    #[error("{0}")]
    NotFound(String),
    /// Several VMs have that name; the message lists their resource groups.
    #[error("{0}")]
    Ambiguous(String),
    #[error(transparent)]
    Arm(#[from] AzureError),
}

impl RefusedToken for VmLookupError {
    fn refused_token(&self) -> bool {
        matches!(self, VmLookupError::Arm(e) if e.refused_token())
    }
}

#[derive(Deserialize, Clone)]
struct ArmVm {
    id: String,
    name: String,
}

/// Where to look: a subscription, optionally one resource group of it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Scope {
    subscription: String,
    resource_group: Option<String>,
}

impl Scope {
    fn describe(&self) -> String {
        describe_scope(&self.subscription, self.resource_group.as_deref())
    }
}

/// "subscription S", or "resource group RG of subscription S".
pub fn describe_scope(subscription: &str, resource_group: Option<&str>) -> String {
    match resource_group {
        Some(rg) => format!("resource group {rg} of subscription {subscription}"),
        None => format!("subscription {subscription}"),
    }
}

/// Cached VM listings by scope.
#[derive(Default)]
pub struct VmNames {
    listings: Mutex<HashMap<Scope, (Instant, Vec<ArmVm>)>>,
}

impl VmNames {
    /// The resource id of the VM `name` in `subscription` (or in its
    /// `resource_group`), from a fresh cached listing when there is one.
    pub async fn resolve(
        &self,
        http: &reqwest::Client,
        resource_manager: &str,
        token: &Secret,
        subscription: &str,
        resource_group: Option<&str>,
        name: &str,
    ) -> Result<String, VmLookupError> {
        let scope = Scope {
            subscription: subscription.to_ascii_lowercase(),
            resource_group: resource_group.map(str::to_ascii_lowercase),
        };
        if let Some(vms) = self.fresh(&scope)
            && let Ok(id) = pick(&vms, name, &scope)
        {
            return Ok(id);
        }
        // Stale, or the name is not (uniquely) there: ask ARM again.
        let mut vms = list(http, resource_manager, token, subscription, resource_group).await?;
        let mut picked = pick(&vms, name, &scope);
        let not_found = matches!(picked, Err(VmLookupError::NotFound(_)));
        if let (true, Some(set)) = (not_found, scale_set_of(name)) {
            let base = scope_url(resource_manager, subscription, resource_group);
            vms.extend(instances(http, &base, token, set).await?);
            picked = pick(&vms, name, &scope);
        }
        self.listings.lock().insert(scope, (Instant::now(), vms));
        picked
    }

    fn fresh(&self, scope: &Scope) -> Option<Vec<ArmVm>> {
        let listings = self.listings.lock();
        let (at, vms) = listings.get(scope)?;
        (at.elapsed() < VM_LISTING_TTL).then(|| vms.clone())
    }
}

/// The ARM URL of a subscription, or of one resource group of it.
fn scope_url(resource_manager: &str, subscription: &str, resource_group: Option<&str>) -> String {
    let base = resource_manager.trim_end_matches('/');
    match resource_group {
        Some(rg) => format!("{base}/subscriptions/{subscription}/resourceGroups/{rg}"),
        None => format!("{base}/subscriptions/{subscription}"),
    }
}

/// Every VM of the scope, through ARM.
async fn list(
    http: &reqwest::Client,
    resource_manager: &str,
    token: &Secret,
    subscription: &str,
    resource_group: Option<&str>,
) -> Result<Vec<ArmVm>, AzureError> {
    let scope = scope_url(resource_manager, subscription, resource_group);
    let url =
        format!("{scope}/providers/Microsoft.Compute/virtualMachines?api-version={API_VERSION}");
    arm_list::list(http, url, token, "listing VMs in Azure Resource Manager").await
}

/// The scale set a name of the shape `<set>_<instance id>` would belong to.
fn scale_set_of(name: &str) -> Option<&str> {
    let (set, id) = name.rsplit_once('_')?;
    let numeric = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    (!set.is_empty() && numeric).then_some(set)
}

/// The instances of the scale sets called `set` in the scope at `scope_url`.
async fn instances(
    http: &reqwest::Client,
    scope_url: &str,
    token: &Secret,
    set: &str,
) -> Result<Vec<ArmVm>, AzureError> {
    let what = "listing scale-set instances in Azure Resource Manager";
    let url = format!(
        "{scope_url}/providers/Microsoft.Compute/virtualMachineScaleSets?api-version={API_VERSION}"
    );
    let sets: Vec<ArmVm> = arm_list::list(http, url, token, what).await?;
    let base = scope_url
        .split("/subscriptions/")
        .next()
        .unwrap_or_default();
    let mut found = Vec::new();
    for s in sets.iter().filter(|s| s.name.eq_ignore_ascii_case(set)) {
        let url = format!("{base}{}/virtualMachines?api-version={API_VERSION}", s.id);
        found.extend(arm_list::list::<ArmVm>(http, url, token, what).await?);
    }
    Ok(found)
}

/// The one VM called `name` (case-insensitively) in `vms`.
fn pick(vms: &[ArmVm], name: &str, scope: &Scope) -> Result<String, VmLookupError> {
    pick_named(
        vms,
        |vm| (&vm.id, &vm.name),
        name,
        "VM",
        &scope.describe(),
        "target it by IP or resource id",
    )
    .map(|vm| vm.id.clone())
}

/// The one item called `name` (case-insensitively) among `items`, whose
/// resource id and name `parts` gives. The refusals name the `noun` ("VM",
/// "managed cluster"), the `place` looked in and what to do `instead`.
pub fn pick_named<'a, T>(
    items: &'a [T],
    parts: impl Fn(&T) -> (&str, &str),
    name: &str,
    noun: &str,
    place: &str,
    instead: &str,
) -> Result<&'a T, VmLookupError> {
    let found: Vec<&T> = items
        .iter()
        .filter(|item| parts(item).1.eq_ignore_ascii_case(name))
        .collect();
    match found.as_slice() {
        [item] => Ok(item),
        [] => Err(VmLookupError::NotFound(format!(
            "no {noun} named {name:?} in {place} (looked through ARM with the daemon's credential); \
             check the name, or pass --resource-group, or {instead}"
        ))),
        several => {
            let groups: Vec<&str> = several
                .iter()
                .map(|item| {
                    let id = parts(item).0;
                    arm_list::resource_group_of(id).unwrap_or(id)
                })
                .collect();
            Err(VmLookupError::Ambiguous(format!(
                "{} {noun}s are named {name:?} in {place}, in resource groups {}; pick one with --resource-group",
                several.len(),
                groups.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(rg: &str, name: &str) -> ArmVm {
        ArmVm {
            id: format!(
                "/subscriptions/s/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
            ),
            name: name.into(),
        }
    }

    #[test]
    fn instance_names_name_their_scale_set() {
        assert_eq!(scale_set_of("web-ss_0"), Some("web-ss"));
        assert_eq!(scale_set_of("my_set_12"), Some("my_set"));
        for name in ["web", "web_", "_0", "web_x1"] {
            assert_eq!(scale_set_of(name), None, "{name}");
        }
    }

    #[test]
    fn picks_case_insensitively_and_refuses_ambiguity() {
        let scope = Scope {
            subscription: "s".into(),
            resource_group: None,
        };
        let vms = [vm("rg-a", "Web"), vm("rg-a", "twin"), vm("rg-b", "TWIN")];
        assert!(pick(&vms, "web", &scope).unwrap().ends_with("/Web"));
        let Err(VmLookupError::Ambiguous(m)) = pick(&vms, "twin", &scope) else {
            panic!("twin is in two groups")
        };
        assert!(m.contains("rg-a, rg-b"), "{m}");
        let Err(VmLookupError::NotFound(m)) = pick(&vms, "nope", &scope) else {
            panic!("nope is unknown")
        };
        assert!(m.contains("subscription s"), "{m}");
    }
}
