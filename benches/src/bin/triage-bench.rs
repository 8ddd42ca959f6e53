//! `triage-bench`: NSQ V2 load against triaged or nsqd. Usage errors exit 2,
//! failures exit 1, each with one sentence on stderr.

use std::process::ExitCode;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use triage_benches::cli::Cli;
use triage_benches::{plot, scenario};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            // clap's first line is the sentence; usage hints follow it.
            let rendered = e.render().to_string();
            let sentence = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("triage-bench: {}", sentence.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if let Err(sentence) = cli.validate() {
        eprintln!("triage-bench: {sentence}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("triage-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        scenario::run(&cli, &shutdown).await
    })?;
    print!("{}", report.summary());
    if let Some(path) = &cli.common.json {
        report
            .write_json(path)
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
    }
    if let Some(path) = &cli.common.plot {
        let title = format!("triage-bench {}", report.mode);
        plot::write_png(path, &title, &report.plot_series())?;
    }
    let errors: Vec<&str> = report.errors().collect();
    if let Some(first) = errors.first() {
        eprintln!(
            "triage-bench: {} connection(s) failed during the run, first: {first}",
            errors.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
