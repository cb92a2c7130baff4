//! `oomwatch alerts`: what is pending or firing now, and what happened.

use std::process::ExitCode;

use super::{AlertsArgs, status::ask};
use crate::wire::{AlertsReport, RequestOp, printable};

pub fn main(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let report: AlertsReport = ask(&args.socket, RequestOp::Alerts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    if report.active.is_empty() {
        println!("No alerts pending or firing.");
    } else {
        println!("{:<8} {:<9} {:<16} {:<24} CGROUP / SUMMARY", "STATE", "SEVERITY", "ALERT", "SINCE");
        for a in &report.active {
            println!(
                "{:<8} {:<9} {:<16} {:<24} {}\n{:>60}{}",
                a.state.as_str(),
                a.key.severity.as_str(),
                a.key.alert.as_str(),
                a.since.get(..23).unwrap_or(&a.since),
                printable(&a.key.cgroup),
                "",
                printable(&a.summary)
            );
        }
    }
    let skip = if args.history == 0 { 0 } else { report.history.len().saturating_sub(args.history) };
    let past: Vec<_> = report.history.iter().skip(skip).collect();
    if !past.is_empty() {
        println!("\nRecent transitions (oldest first):");
        for t in past {
            println!(
                "  {} {:<9} {:<8} {:<16} {}  {}",
                t.at.get(..23).unwrap_or(&t.at),
                t.state.as_str(),
                t.key.severity.as_str(),
                t.key.alert.as_str(),
                printable(&t.key.cgroup),
                printable(&t.summary)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
