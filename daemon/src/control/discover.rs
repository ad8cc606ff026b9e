//! `DiscoverBastions`: every Bastion host the daemon's credential can see,
//! across its subscriptions (ARM: the subscriptions, then each one's
//! `Microsoft.Network/bastionHosts`), with what each can serve and why not.

use bastion_proto::target::{Target, TargetHost};
use bastion_proto::v1 as proto;
use serde::Deserialize;

use crate::azure::arm_list;
use crate::azure::bastion_host::{ArmBastion, BastionHost};
use crate::bastion::tunnel::Connector;
use crate::error::AzureError;

/// The ARM API version of the subscription listing.
const SUBSCRIPTIONS_API_VERSION: &str = "2022-12-01";
/// The ARM API version of the bastion host listing (as for one bastion).
const BASTIONS_API_VERSION: &str = "2024-01-01";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArmSubscription {
    subscription_id: String,
}

/// Lists the bastions; a subscription that cannot be read is a warning, not a failure.
pub async fn discover(
    connector: &Connector,
) -> Result<proto::DiscoverBastionsResponse, AzureError> {
    let token = connector.token().await?;
    let http = connector.http();
    let base = connector
        .settings()
        .cloud
        .resource_manager
        .trim_end_matches('/');
    let subscriptions: Vec<ArmSubscription> = arm_list::list(
        http,
        format!("{base}/subscriptions?api-version={SUBSCRIPTIONS_API_VERSION}"),
        &token,
        "listing subscriptions in Azure Resource Manager",
    )
    .await?;
    let mut response = proto::DiscoverBastionsResponse::default();
    for sub in subscriptions {
        let id = &sub.subscription_id;
        let url = format!(
            "{base}/subscriptions/{id}/providers/Microsoft.Network/bastionHosts?api-version={BASTIONS_API_VERSION}"
        );
        let listed: Result<Vec<ArmBastion>, _> =
            arm_list::list(http, url, &token, "listing bastion hosts").await;
        match listed {
            Ok(bastions) => response
                .bastions
                .extend(bastions.into_iter().map(|b| describe(b, id))),
            Err(error) => response
                .warnings
                .push(format!("subscription {id}: {error}")),
        }
    }
    response
        .bastions
        .sort_by(|a, b| (&a.subscription, &a.name).cmp(&(&b.subscription, &b.name)));
    Ok(response)
}

fn describe(b: ArmBastion, subscription: &str) -> proto::DiscoveredBastion {
    let resource_group = arm_list::resource_group_of(&b.id)
        .unwrap_or_default()
        .to_string();
    let host = BastionHost {
        sku: b.sku_name(),
        dns_name: b.properties.dns_name.unwrap_or_default(),
        tunneling: b.properties.enable_tunneling,
        ip_connect: b.properties.enable_ip_connect,
        subscription: subscription.to_string(),
        resource_group: resource_group.clone(),
    };
    let probe = |host_kind: TargetHost| {
        host.check(
            &b.name,
            &Target {
                host: host_kind,
                port: 22,
            },
        )
    };
    let ip = probe(TargetHost::Ip([10, 0, 0, 4].into()));
    let vm = probe(TargetHost::Vm(String::new()));
    let why = match (&ip, &vm) {
        (_, Err(e)) | (Err(e), Ok(())) => e.to_string(),
        (Ok(()), Ok(())) => String::new(),
    };
    proto::DiscoveredBastion {
        name: b.name,
        resource_id: b.id,
        subscription: subscription.to_string(),
        resource_group,
        sku: host.sku.clone(),
        tunneling: host.tunneling,
        ip_connect: host.ip_connect,
        serves_ip_targets: ip.is_ok(),
        serves_vm_targets: vm.is_ok(),
        why,
    }
}
