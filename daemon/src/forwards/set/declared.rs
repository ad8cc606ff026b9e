//! Forwards declared in the settings file (`[forwards.NAME]`), made the
//! running ones at start and on every reload: an entry added starts its
//! forward, one changed restarts only its own listener, one removed stops
//! it. The forwards added with bastionctl, the unchanged declared ones and
//! their live connections are not touched. Every entry is checked before
//! anything changes (its name, and that no other forward holds that name or
//! port), so a bad one changes nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use bastion_proto::time::now_ms;

use super::{DEFAULT_BIND, ForwardError, Forwards, overlaps};
use crate::config::{DeclaredForward, Settings};
use crate::forwards::destination::Destination;
use crate::forwards::forward::{self, Forward};
use crate::forwards::name::{new_id, validate_name};
use crate::forwards::source::Source;
use crate::forwards::spec::ForwardSpec;

/// What a reconciliation does: forwards to stop, then specs to start, and
/// one line per change for the caller (`reload` prints them).
#[derive(Default)]
struct Plan {
    stop: Vec<Arc<Forward>>,
    start: Vec<ForwardSpec>,
    changes: Vec<String>,
}

impl Forwards {
    /// Makes the declared forwards those of `settings`; returns one line per
    /// change. An error (naming the entry's key) changes nothing.
    pub async fn reconcile(&self, settings: &Settings) -> Result<Vec<String>, ForwardError> {
        let _changing = self.changes.lock().await;
        let plan = self.plan(settings)?;
        for old in &plan.stop {
            // Awaited: a changed entry may listen on the port it had.
            old.stop().await;
            self.lock().retain(|f| !Arc::ptr_eq(f, old));
            self.shared.events.forward_removed(old.spec.id.clone());
        }
        for spec in plan.start {
            // As at a restore: a port another program holds is retried, not
            // an error of the file.
            let listener = forward::bind(spec.local);
            if let Err(e) = &listener {
                tracing::warn!(forward = %spec.name, error = %forward::bind_error(spec.local, e), "declared forward cannot listen yet");
            }
            let started = Forward::start(spec, listener, &self.shared);
            self.lock().push(started.clone());
            self.shared.events.forward_changed(started.to_proto());
        }
        Ok(plan.changes)
    }

    fn plan(&self, settings: &Settings) -> Result<Plan, ForwardError> {
        let list = self.lock();
        let declared = |f: &&Arc<Forward>| f.spec.source == Source::Config;
        let mut plan = Plan::default();
        for (name, entry) in &settings.forwards {
            let spec = declared_spec(name, entry, settings)?;
            match list.iter().filter(declared).find(|f| f.spec.name == *name) {
                Some(running) if running.spec.same_route(&spec) => continue,
                Some(running) => {
                    plan.stop.push(running.clone());
                    plan.changes.push(format!(
                        "forward {name} changed: its listener restarted ({} → {})",
                        spec.local, spec.target
                    ));
                }
                None => plan.changes.push(format!(
                    "forward {name} added ({} → {})",
                    spec.local, spec.target
                )),
            }
            plan.start.push(spec);
        }
        for gone in list
            .iter()
            .filter(declared)
            .filter(|f| !settings.forwards.contains_key(&f.spec.name))
        {
            plan.stop.push(gone.clone());
            plan.changes
                .push(format!("forward {} removed", gone.spec.name));
        }
        // What stays must leave each new forward its name and its port.
        let staying: Vec<&ForwardSpec> = list
            .iter()
            .filter(|f| !plan.stop.iter().any(|s| Arc::ptr_eq(s, f)))
            .map(|f| &f.spec)
            .collect();
        let unrestored = self.unrestored.lock();
        for (i, spec) in plan.start.iter().enumerate() {
            let key = format!("`forwards.{}`", spec.name);
            let named = staying.iter().any(|f| f.name == spec.name)
                || unrestored.iter().any(|u| u.name() == spec.name);
            if named {
                return Err(ForwardError::AlreadyExists(format!(
                    "{key}: a forward added with bastionctl is named {:?} already; rename the \
                     entry or remove that forward",
                    spec.name
                )));
            }
            let holder = staying
                .iter()
                .copied()
                .chain(&plan.start[..i])
                .find(|other| overlaps(other.local, spec.local));
            if let Some(holder) = holder {
                return Err(ForwardError::AlreadyExists(format!(
                    "{key}: local port {} is already used by forward {:?} ({})",
                    spec.local.port(),
                    holder.name,
                    holder.source.as_str()
                )));
            }
        }
        Ok(plan)
    }
}

/// The forward an entry declares (the file was checked when read; the name
/// rules are the forwards' own).
fn declared_spec(
    name: &str,
    entry: &DeclaredForward,
    settings: &Settings,
) -> Result<ForwardSpec, ForwardError> {
    let invalid =
        |message: String| ForwardError::InvalidArgument(format!("`forwards.{name}`: {message}"));
    validate_name(name).map_err(invalid)?;
    let target = match entry.parsed_target().map_err(invalid)? {
        Some(target) => Destination::Fixed(target),
        None => Destination::Socks5,
    };
    let bastion = entry
        .bastion
        .as_deref()
        .or(settings.default_bastion())
        .ok_or_else(|| invalid("names no bastion, and there is no `default_bastion`".into()))?;
    Ok(ForwardSpec {
        id: new_id(),
        name: name.to_owned(),
        bastion: bastion.to_owned(),
        target,
        local: SocketAddr::new(entry.bind.unwrap_or(DEFAULT_BIND), entry.port),
        created_at_ms: now_ms(),
        allow_other_users: entry.allow_other_users,
        source: Source::Config,
        resource_group: entry
            .resource_group
            .clone()
            .filter(|rg| !rg.trim().is_empty()),
        // Declared in the settings, never saved to the state file.
        unknown: serde_json::Map::new(),
    })
}
