//! `bastion discover`: the Bastion hosts the daemon's credential can see,
//! and what each can serve (the daemon asks ARM; we only print).

use std::path::PathBuf;

use bastion_proto::v1::{DiscoverBastionsRequest, DiscoveredBastion};
use serde_json::json;

use crate::daemon::{self, rpc_error};
use crate::output::{self, outln};

pub async fn run(socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let response = client
        .discover_bastions(DiscoverBastionsRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    for warning in &response.warnings {
        eprintln!("bastionctl: warning: {}", output::one_line(warning));
    }
    if json {
        let items: Vec<serde_json::Value> = response.bastions.iter().map(item_json).collect();
        outln!("{}", serde_json::to_string_pretty(&items)?)?;
    } else if response.bastions.is_empty() {
        outln!("No Bastion hosts visible to the daemon's credential.")?;
    } else {
        outln!("{}", render(&response.bastions))?;
    }
    Ok(())
}

/// One bastion as `--json` prints it (a stable interface).
fn item_json(b: &DiscoveredBastion) -> serde_json::Value {
    json!({
        "name": b.name,
        "resource_id": b.resource_id,
        "subscription": b.subscription,
        "resource_group": b.resource_group,
        "sku": b.sku,
        "tunneling": b.tunneling,
        "ip_connect": b.ip_connect,
        "serves": serves(b),
        "why": output::non_empty(&b.why),
    })
}

/// "ip+vm", "vm", "none".
fn serves(b: &DiscoveredBastion) -> &'static str {
    match (b.serves_ip_targets, b.serves_vm_targets) {
        (true, true) => "ip+vm",
        (false, true) => "vm",
        (true, false) => "ip",
        (false, false) => "none",
    }
}

fn render(bastions: &[DiscoveredBastion]) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = format!(
        "{:<24} {:<20} {:<10} {:<8} {:<8} {:<7} {}\n",
        "NAME", "RESOURCE GROUP", "SKU", "NATIVE", "IP-CONN", "SERVES", "SUBSCRIPTION"
    );
    for b in bastions {
        out.push_str(&format!(
            "{:<24} {:<20} {:<10} {:<8} {:<8} {:<7} {}\n",
            b.name,
            b.resource_group,
            b.sku,
            yes(b.tunneling),
            yes(b.ip_connect),
            serves(b),
            b.subscription
        ));
        if !b.why.is_empty() {
            out.push_str(&format!("    {}\n", output::one_line(&b.why)));
        }
    }
    out.push_str("Add one with `bastionctl bastion add NAME RESOURCE_ID` (resource ids: --json).");
    out
}
