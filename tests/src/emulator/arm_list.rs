//! ARM listings: `GET /subscriptions`, the VMs of a subscription or resource
//! group (and one VM), the scale sets of a subscription and the instances of
//! one, and the bastion hosts of a subscription. Paths match
//! case-insensitively, as ARM's do.

use http::StatusCode;
use serde_json::{Value, json};

use super::http::{Resp, arm_error, json};
use super::vms::{VMS, VmSpec};
use super::{DEFAULT_SUBSCRIPTION, Shared, arm::bastion_json, tenant_of};

/// The answer for `path` if it is one of the listings, else `None`.
pub(crate) fn route(shared: &Shared, tenant: &str, path: &str) -> Option<Resp> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let vms = |ns: &str, kind: &str| is(ns, "Microsoft.Compute") && is(kind, "virtualMachines");
    let sets =
        |ns: &str, kind: &str| is(ns, "Microsoft.Compute") && is(kind, "virtualMachineScaleSets");
    Some(match segs.as_slice() {
        [subs] if is(subs, "subscriptions") => subscriptions(shared, tenant),
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
        [_, sub, providers, ns, kind] if is(providers, "providers") && sets(ns, kind) => {
            list_scale_sets(shared, sub)
        }
        [_, sub, rgs, _, providers, ns, kind]
            if is(rgs, "resourceGroups") && is(providers, "providers") && sets(ns, kind) =>
        {
            list_scale_sets(shared, sub)
        }
        [_, sub, rgs, rg, providers, ns, kind, set, instances]
            if is(rgs, "resourceGroups")
                && is(providers, "providers")
                && sets(ns, kind)
                && is(instances, "virtualMachines") =>
        {
            list_instances(shared, sub, rg, set)
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

/// Every subscription a bastion lives in, plus the default one (sorted):
/// the signed-in user's subscriptions, across tenants.
pub(crate) fn subscription_ids(shared: &Shared) -> Vec<String> {
    let mut ids: Vec<String> = shared
        .faults
        .bastions()
        .into_iter()
        .map(|b| b.subscription)
        .collect();
    ids.push(DEFAULT_SUBSCRIPTION.to_owned());
    ids.sort();
    ids.dedup();
    ids
}

/// The subscriptions of the token's tenant, as ARM lists them.
fn subscriptions(shared: &Shared, tenant: &str) -> Resp {
    let value: Vec<Value> = subscription_ids(shared)
        .iter()
        .filter(|id| tenant_of(id) == tenant)
        .map(|id| {
            json!({
                "id": format!("/subscriptions/{id}"),
                "subscriptionId": id,
                "tenantId": tenant,
                "displayName": format!("Emulated {id}"),
                "state": "Enabled",
            })
        })
        .collect();
    json(StatusCode::OK, &json!({ "value": value }))
}

fn known_subscription(shared: &Shared, sub: &str) -> bool {
    subscription_ids(shared)
        .iter()
        .any(|s| s.eq_ignore_ascii_case(sub))
}

fn subscription_not_found(shared: &Shared, sub: &str) -> Resp {
    shared.ledger.reject("arm_subscription_not_found");
    arm_error(
        StatusCode::NOT_FOUND,
        "SubscriptionNotFound",
        &format!("The subscription '{sub}' could not be found."),
    )
}

/// VMs (not scale-set instances: ARM lists those under their scale set).
fn list_vms(shared: &Shared, sub: &str, rg: Option<&str>) -> Resp {
    shared.ledger.update(|l| l.arm_vm_lists += 1);
    if !known_subscription(shared, sub) {
        return subscription_not_found(shared, sub);
    }
    let vms: Vec<&VmSpec> = VMS
        .iter()
        .filter(|vm| {
            vm.scale_set.is_none()
                && vm.subscription.eq_ignore_ascii_case(sub)
                && rg.is_none_or(|rg| vm.resource_group.eq_ignore_ascii_case(rg))
        })
        .collect();
    if let Some(rg) = rg.filter(|_| vms.is_empty()) {
        shared.ledger.reject("arm_resource_group_not_found");
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{rg}' could not be found."),
        );
    }
    let value: Vec<Value> = vms.into_iter().map(vm_json).collect();
    json(StatusCode::OK, &json!({ "value": value }))
}

fn get_vm(shared: &Shared, sub: &str, rg: &str, name: &str) -> Resp {
    match super::vms::find(sub, rg, name) {
        Some(vm) => json(StatusCode::OK, &vm_json(vm)),
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

/// The scale sets of a subscription.
fn list_scale_sets(shared: &Shared, sub: &str) -> Resp {
    if !known_subscription(shared, sub) {
        return subscription_not_found(shared, sub);
    }
    let mut sets: Vec<(&str, &str)> = VMS
        .iter()
        .filter(|vm| vm.subscription.eq_ignore_ascii_case(sub))
        .filter_map(|vm| Some((vm.resource_group, vm.scale_set?.0)))
        .collect();
    sets.dedup();
    let value: Vec<Value> = sets
        .iter()
        .map(|(rg, set)| {
            json!({
                "name": set,
                "id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{set}"),
                "type": "Microsoft.Compute/virtualMachineScaleSets",
                "location": "westeurope",
                "properties": { "orchestrationMode": "Uniform" },
            })
        })
        .collect();
    json(StatusCode::OK, &json!({ "value": value }))
}

/// The instances of one scale set.
fn list_instances(shared: &Shared, sub: &str, rg: &str, set: &str) -> Resp {
    shared.ledger.update(|l| l.arm_vm_lists += 1);
    let value: Vec<Value> = VMS
        .iter()
        .filter(|vm| {
            vm.subscription.eq_ignore_ascii_case(sub)
                && vm.resource_group.eq_ignore_ascii_case(rg)
                && vm
                    .scale_set
                    .is_some_and(|(s, _)| s.eq_ignore_ascii_case(set))
        })
        .map(vm_json)
        .collect();
    if value.is_empty() {
        shared.ledger.reject("arm_scale_set_not_found");
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.Compute/virtualMachineScaleSets/{set}' under resource group '{rg}' was not found."
            ),
        );
    }
    json(StatusCode::OK, &json!({ "value": value }))
}

fn vm_json(vm: &VmSpec) -> Value {
    let kind = match vm.scale_set {
        Some(_) => "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
        None => "Microsoft.Compute/virtualMachines",
    };
    let mut value = json!({
        "name": vm.name,
        "id": vm.resource_id(),
        "type": kind,
        "location": "westeurope",
        "properties": { "provisioningState": "Succeeded", "vmId": format!("{:x}", fnv1a(vm.name)) },
    });
    if let Some((_, id)) = vm.scale_set {
        value["instanceId"] = json!(id);
    }
    value
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
        .map(|b| bastion_json(b, shared.dns_name(b)))
        .collect();
    json(StatusCode::OK, &json!({ "value": value }))
}
