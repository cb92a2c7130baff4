//! `oomwatch completions SHELL` and `oomwatch man [SUBCOMMAND]`: generated
//! from the same clap definition the parser uses, so they never drift from
//! the flags the binary accepts.

use std::{io::Write as _, process::ExitCode};

use clap::CommandFactory as _;

use super::{Cli, CompletionsArgs, ManArgs};

/// stdout closed early (`| head`) is not an error worth a message.
fn finish(result: std::io::Result<()>) -> anyhow::Result<ExitCode> {
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::anyhow!("writing to stdout: {e}")),
        _ => Ok(ExitCode::SUCCESS),
    }
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "oomwatch", &mut buf);
    finish(std::io::stdout().lock().write_all(&buf))
}

/// The roff page: oomwatch(8) by default, oomwatch-SUB(8) for a subcommand.
pub fn man_page(subcommand: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match subcommand {
        None => cmd,
        Some(name) => {
            let Some(sub) = cmd.find_subcommand(name) else {
                let names: Vec<&str> = cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").map(|s| s.get_name()).collect();
                anyhow::bail!("man: no subcommand '{name}'; one of: {}", names.join(", "));
            };
            let name = format!("oomwatch-{}", sub.get_name());
            // clap takes &'static names without its "string" feature; this runs once.
            sub.clone().name(&*name.leak()).bin_name(format!("oomwatch {}", sub.get_name()))
        }
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).section("8").manual("oomwatch manual").source(concat!("oomwatch ", env!("CARGO_PKG_VERSION"))).render(&mut buf)?;
    Ok(buf)
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let page = man_page(args.subcommand.as_deref())?;
    finish(std::io::stdout().lock().write_all(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_name_every_subcommand() {
        let page = String::from_utf8(man_page(None).unwrap()).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH oomwatch 8"), "{page}");
        for sub in ["daemon", "tail", "status", "alerts", "check", "selftest", "completions", "man"] {
            assert!(page.contains(sub), "{sub} missing:\n{page}");
        }
        let daemon = String::from_utf8(man_page(Some("daemon")).unwrap()).unwrap();
        assert!(daemon.contains("push\\-gateway"), "{daemon}");
        let e = man_page(Some("nope")).unwrap_err().to_string();
        assert!(e.contains("'nope'") && e.contains("daemon") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn completions_for_each_shell() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "oomwatch", &mut buf);
            let text = String::from_utf8(buf).unwrap();
            assert!(text.contains("selftest") && text.contains("push-gateway"), "{shell}: {text}");
        }
    }
}
