//! The Developer SKU's data pod (QuickConnect alike): before a session, the
//! bastion's own host is asked `POST /api/connection` (JSON: the VM, its
//! port, the bastion and an ARM token, `connectionType` "nativeclient", as
//! the Azure CLI's bastion extension sends it) and answers with the bare host
//! name of the pod that carries the session: token POST, `/omni/webtunnel/`
//! and DELETE all go there. The answer is read bounded, must be a host name
//! (with a port at most) and is used as nothing else.
//!
//! [`DataPods`] remembers the answer per bastion host, VM and port for
//! [`POD_TTL`] at most, and forgets it as soon as the pod refuses or cannot
//! be reached, so a moved pod costs one lookup, never a failed connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bastion_proto::target::{Target, TargetHost};

use crate::azure::bastion_host::BastionHost;
use crate::azure::http::read_capped;
use crate::error::AzureError;
use crate::error_body::error_message;
use crate::secret::Secret;

/// Where a Developer bastion names the pod.
const CONNECTION_PATH: &str = "/api/connection";
/// A host name is at most 253 bytes, ":65535" six more; the cap leaves room
/// for surrounding whitespace. Anything longer is not a host name.
const MAX_ANSWER: usize = 512;
/// DNS: at most 253 bytes in all, 63 per label.
const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// The lookup is one small request like the token POST: past this the
/// bastion is in trouble and the waiting client is better served by an error.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a pod answer is used without asking again. Nothing says how long
/// the service keeps a pod for a VM (the Azure CLI keeps it for one
/// `az network bastion tunnel` run); the same five minutes the ARM lookup
/// of the bastion is trusted bounds how long a moved pod could go unseen,
/// and a refusal forgets it at once anyway.
const POD_TTL: Duration = Duration::from_secs(5 * 60);

/// Which pod serves a target: the bastion's host, the VM id (lowercased: ARM
/// ids are case-insensitive) and the port.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    bastion_host: String,
    vm: String,
    port: u16,
}

impl PodKey {
    /// The key of `target` (a VM by id) behind `host`.
    pub fn new(host: &BastionHost, target: &Target) -> Result<PodKey, AzureError> {
        Ok(PodKey {
            bastion_host: host.dns_name.clone(),
            vm: vm_id(target)?.to_ascii_lowercase(),
            port: target.port,
        })
    }
}

/// Pod answers, each kept [`POD_TTL`] at most.
#[derive(Default)]
pub struct DataPods {
    pods: Mutex<HashMap<PodKey, (String, Instant)>>,
}

impl DataPods {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PodKey, (String, Instant)>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod for `key` while its answer is fresh.
    pub fn cached(&self, key: &PodKey) -> Option<String> {
        let mut pods = self.lock();
        match pods.get(key) {
            Some((pod, at)) if at.elapsed() < POD_TTL => Some(pod.clone()),
            Some(_) => {
                pods.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn store(&self, key: PodKey, pod: &str) {
        self.lock().insert(key, (pod.to_string(), Instant::now()));
    }

    /// After the pod refused or could not be reached: ask again next time.
    pub fn forget(&self, key: &PodKey) {
        self.lock().remove(key);
    }
}

/// The VM id a pod lookup names (names are resolved before any tunnel).
fn vm_id(target: &Target) -> Result<&str, AzureError> {
    match &target.host {
        TargetHost::Vm(id) => Ok(id),
        other => Err(AzureError::Precondition(format!(
            "a Developer bastion serves VMs only, not {other}"
        ))),
    }
}

/// Asks the Developer bastion `host` (resource id `bastion_id`) which pod
/// serves `target`; returns the pod's host name.
pub async fn lookup(
    http: &reqwest::Client,
    host: &BastionHost,
    bastion_id: &str,
    target: &Target,
    aztoken: &Secret,
) -> Result<String, AzureError> {
    let what = "Developer bastion pod lookup";
    let body = serde_json::json!({
        "resourceId": vm_id(target)?,
        "bastionResourceId": bastion_id,
        "vmPort": target.port,
        "azToken": aztoken.expose(),
        "connectionType": "nativeclient",
    });
    let response = http
        .post(format!("https://{}{CONNECTION_PATH}", host.dns_name))
        .json(&body)
        .timeout(LOOKUP_TIMEOUT)
        .send()
        .await
        .map_err(|e| AzureError::unreachable(what, &e))?;
    let status = response.status().as_u16();
    let answer = read_capped(response, MAX_ANSWER)
        .await
        .map_err(|e| e.into_azure(what))?;
    if !(200..300).contains(&status) {
        return Err(AzureError::Rejected {
            what,
            status,
            message: error_message(status, &answer),
        });
    }
    pod_host(&answer).ok_or_else(|| AzureError::Rejected {
        what,
        status,
        message: format!(
            "the answer ({} bytes) is not a host name; the Azure CLI would fail here too",
            answer.len()
        ),
    })
}

/// The answer as a host name ("pod.example", or "host:port"), lowercased;
/// None for anything else (a URL, a path, spaces, an empty or long answer).
fn pod_host(answer: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(answer).ok()?.trim();
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text, None),
    };
    if let Some(port) = port {
        port.parse::<u16>().ok().filter(|p| *p != 0)?;
    }
    let label_ok = |label: &str| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name_ok = (1..=MAX_HOST_LEN).contains(&name.len()) && name.split('.').all(label_ok);
    name_ok.then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_host_name_is_taken_from_the_answer() {
        for (answer, want) in [
            ("pod-1.bastion.azure.com", Some("pod-1.bastion.azure.com")),
            ("  POD.example\n", Some("pod.example")),
            ("127.0.0.1:4433", Some("127.0.0.1:4433")),
        ] {
            assert_eq!(pod_host(answer.as_bytes()).as_deref(), want, "{answer}");
        }
        let long = format!("{}.example", "a".repeat(64));
        for bad in [
            "",
            "https://pod.example",
            "pod.example/path",
            "user@pod.example",
            "pod example",
            "pod.example:0",
            "pod.example:99999",
            "\"pod.example\"",
            "-pod.example",
            "pod..example",
            long.as_str(),
        ] {
            assert_eq!(pod_host(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(pod_host(&[0xff, 0xfe]), None);
    }

    #[test]
    fn answers_expire_and_are_forgotten_on_failure() {
        let host = BastionHost {
            dns_name: "dev.example".into(),
            sku: "Developer".into(),
            tunneling: false,
            ip_connect: false,
            subscription: "s".into(),
            resource_group: "g".into(),
        };
        let target = Target::parse(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/VM1:22",
        )
        .unwrap();
        let key = PodKey::new(&host, &target).unwrap();
        let pods = DataPods::default();
        pods.store(key.clone(), "pod.example");
        let lower = Target::parse(&target.to_string().to_lowercase()).unwrap();
        assert_eq!(
            pods.cached(&PodKey::new(&host, &lower).unwrap()).as_deref(),
            Some("pod.example")
        );
        pods.forget(&key);
        assert_eq!(pods.cached(&key), None);
        pods.lock()
            .insert(key.clone(), ("old".into(), Instant::now() - POD_TTL));
        assert_eq!(pods.cached(&key), None);
        let ip = Target::parse("10.1.0.4:22").unwrap();
        assert!(PodKey::new(&host, &ip).is_err());
    }
}
