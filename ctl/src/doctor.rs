//! `doctor TARGET`: the daemon runs the whole path once (token, bastion,
//! VM lookup, session, WebSocket, first bytes, DELETE) and we print each
//! step. Exit status 0 only if every step passed.

use std::path::PathBuf;

use bastion_proto::v1::{DoctorRequest, DoctorResponse};
use serde_json::json;

use crate::cli::DoctorArgs;
use crate::daemon::{self, rpc_error};
use crate::output::{self, outln};

pub async fn run(socket: Option<PathBuf>, args: DoctorArgs) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let request = DoctorRequest {
        target: Some(args.target.into()),
        bastion: args.via.bastion.unwrap_or_default(),
        resource_group: args.via.resource_group.unwrap_or_default(),
    };
    let report = client
        .doctor(request)
        .await
        .map_err(rpc_error)?
        .into_inner();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report_json(&report))?)?;
    } else {
        for line in render(&report) {
            outln!("{line}")?;
        }
    }
    match report.steps.iter().find(|s| !s.ok) {
        None if report.ok => Ok(()),
        Some(failed) => anyhow::bail!("the check failed at step `{}`", failed.name),
        None => anyhow::bail!("the check did not complete"),
    }
}

/// `{"ok": bool, "steps": [{"name", "ok", "ms", "detail"}]}` (a stable interface).
fn report_json(report: &DoctorResponse) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = report
        .steps
        .iter()
        .map(|s| json!({"name": s.name, "ok": s.ok, "ms": s.ms, "detail": s.detail}))
        .collect();
    json!({"ok": report.ok, "steps": steps})
}

fn render(report: &DoctorResponse) -> Vec<String> {
    let mut lines: Vec<String> = report
        .steps
        .iter()
        .map(|s| {
            format!(
                "{:<4} {:<12} {:>6} ms  {}",
                if s.ok { "ok" } else { "FAIL" },
                s.name,
                s.ms,
                output::one_line(&s.detail)
            )
        })
        .collect();
    if report.ok {
        lines.push(format!("All {} steps passed.", report.steps.len()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use bastion_proto::v1::DoctorStep;

    #[test]
    fn renders_steps_and_json() {
        let report = DoctorResponse {
            ok: false,
            steps: vec![DoctorStep {
                name: "token".into(),
                ok: false,
                ms: 12,
                detail: "cannot get a token; sign in with `az login`".into(),
            }],
        };
        assert_eq!(
            render(&report),
            vec!["FAIL token            12 ms  cannot get a token; sign in with `az login`"]
        );
        assert_eq!(
            report_json(&report),
            json!({"ok": false, "steps": [{"name": "token", "ok": false, "ms": 12,
                "detail": "cannot get a token; sign in with `az login`"}]})
        );
    }
}
