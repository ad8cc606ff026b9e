//! `completions` and `man`: generated from the clap command tree, so they
//! never drift from the real flags.

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

pub fn completions(shell: Shell) -> anyhow::Result<()> {
    // Rendered in memory first: clap_complete panics on write errors.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "bastionctl", &mut script);
    write_all(&script)
}

pub fn man() -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    write_all(&page)
}

fn write_all(bytes: &[u8]) -> anyhow::Result<()> {
    std::io::stdout()
        .lock()
        .write_all(bytes)
        .context("cannot write to stdout")
}
