//! ARM listings: `GET /subscriptions`, the VMs of a subscription or resource
//! group (and one VM), and the bastion hosts of a subscription. Paths match
//! case-insensitively, as ARM's do.

use http::StatusCode;
use serde_json::{Value, json};

use super::http::{Resp, arm_error, json};
use super::vms::{VMS, VmSpec};
use super::{DEFAULT_SUBSCRIPTION, Shared, arm::bastion_json};

/// The answer for `path` if it is one of the listings, else `None`.
pub(crate) fn route(shared: &Shared, path: &str) -> Option<Resp> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let vms = |ns: &str, kind: &str| is(ns, "Microsoft.Compute") && is(kind, "virtualMachines");
    Some(match segs.as_slice() {
        [subs] if is(subs, "subscriptions") => subscriptions(shared),
        [_, sub, providers, ns, kind] if is(providers, "providers") && vms(ns, kind) => {
            list_vms(shared, sub, None)
        }
        [_, sub, rgs, rg, providers, ns, kind]
            if is(rgs, "resourceGroups") && is(providers, "providers") && vms(ns, kind) =>
        {
            list_vms(shared, sub, Some(rg))
        }
        [_, sub, rgs, rg, providers, ns, kind, name]
            if is(rgs, "resourceGroups") && is(providers, "providers") && vms(ns, kind) =>
        {
            get_vm(shared, sub, rg, name)
        }
        [_, sub, providers, ns, kind]
            if is(providers, "providers")
                && is(ns, "Microsoft.Network")
                && is(kind, "bastionHosts") =>
        {
            list_bastions(shared, sub)
        }
        _ => return None,
    })
}

/// Every subscription a bastion lives in, plus the default one.
fn subscriptions(shared: &Shared) -> Resp {
    let mut ids: Vec<String> = shared
        .faults
        .bastions()
        .into_iter()
        .map(|b| b.subscription)
        .collect();
    ids.push(DEFAULT_SUBSCRIPTION.to_owned());
    ids.sort();
    ids.dedup();
    let value: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": format!("/subscriptions/{id}"),
                "subscriptionId": id,
                "tenantId": super::TENANT_ID,
                "displayName": format!("Emulated {id}"),
                "state": "Enabled",
            })
        })
        .collect();
    json(StatusCode::OK, &json!({ "value": value }))
}

fn known_subscription(shared: &Shared, sub: &str) -> bool {
    sub.eq_ignore_ascii_case(DEFAULT_SUBSCRIPTION)
        || shared
            .faults
            .bastions()
            .iter()
            .any(|b| b.subscription.eq_ignore_ascii_case(sub))
}

fn subscription_not_found(shared: &Shared, sub: &str) -> Resp {
    shared.ledger.reject("arm_subscription_not_found");
    arm_error(
        StatusCode::NOT_FOUND,
        "SubscriptionNotFound",
        &format!("The subscription '{sub}' could not be found."),
    )
}

fn list_vms(shared: &Shared, sub: &str, rg: Option<&str>) -> Resp {
    shared.ledger.update(|l| l.arm_vm_lists += 1);
    if !known_subscription(shared, sub) {
        return subscription_not_found(shared, sub);
    }
    let in_sub = sub.eq_ignore_ascii_case(DEFAULT_SUBSCRIPTION);
    let vms: Vec<&VmSpec> = VMS
        .iter()
        .filter(|vm| in_sub && rg.is_none_or(|rg| vm.resource_group.eq_ignore_ascii_case(rg)))
        .collect();
    if let Some(rg) = rg.filter(|_| vms.is_empty()) {
        shared.ledger.reject("arm_resource_group_not_found");
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        );
    }
    let value: Vec<Value> = vms.iter().map(|vm| vm_json(vm, sub)).collect();
    json(StatusCode::OK, &json!({ "value": value }))
}

fn get_vm(shared: &Shared, sub: &str, rg: &str, name: &str) -> Resp {
    match super::vms::find(rg, name).filter(|_| sub.eq_ignore_ascii_case(DEFAULT_SUBSCRIPTION)) {
        Some(vm) => json(StatusCode::OK, &vm_json(vm, sub)),
        None => {
            shared.ledger.reject("arm_vm_not_found");
            arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!(
                    "The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group '{rg}' was not found."
                ),
            )
        }
    }
}

fn vm_json(vm: &VmSpec, sub: &str) -> Value {
    json!({
        "name": vm.name,
        "id": vm.resource_id(sub),
        "type": "Microsoft.Compute/virtualMachines",
        "location": "westeurope",
        "properties": { "provisioningState": "Succeeded", "vmId": format!("{:x}", fnv1a(vm.name)) },
    })
}

/// A stable made-up VM id from the name (cosmetic).
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn list_bastions(shared: &Shared, sub: &str) -> Resp {
    if !known_subscription(shared, sub) {
        return subscription_not_found(shared, sub);
    }
    let value: Vec<Value> = shared
        .faults
        .bastions()
        .iter()
        .filter(|b| b.subscription.eq_ignore_ascii_case(sub))
        .map(|b| bastion_json(b, &shared.endpoint))
        .collect();
    json(StatusCode::OK, &json!({ "value": value }))
}
