//! `payorch export` and `payorch import`: the event store as JSON lines,
//! one `RecordedEvent` per line.
//!
//! Export writes the whole store in global order (pages of 10,000), or the
//! selected streams (`--stream ID`, repeatable) one after another.
//!
//! Import stores the events in batches of up to 10,000 per transaction
//! through the store's bulk import (`BulkImport`: on Postgres three
//! statements per batch, one multi-row `INSERT ... SELECT FROM UNNEST`),
//! not through the append path. Each event keeps its stream, version and
//! event id, so importing the same file twice stores nothing the second
//! time (ids already stored at the same place are skipped); every line
//! must parse as an exported event, and each stream must continue where
//! the store (or the file) left it, else the batch is refused whole
//! (conflict). A progress bar shows bytes read.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use payorch_engine::orchestrator::read_whole_stream;
use payorch_engine::store::{Position, RecordedEvent, StreamId};
use serde_json::json;

use crate::Globals;
use crate::output::Output;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Only these streams (repeatable); default: the whole store.
    #[arg(long = "stream", value_name = "ID")]
    streams: Vec<String>,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// A JSON-lines file written by `payorch export` (`-` for stdin).
    file: PathBuf,
}

/// Events per `read_all` page of an export.
const EXPORT_PAGE: usize = 10_000;

/// Events per import transaction (at most the store's own limit).
const IMPORT_BATCH: usize = 10_000;

fn spinner(template: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

pub fn run_export(args: &ExportArgs, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let config = globals.config()?;
    crate::block_on(async {
        let store = Store::open_existing_migrated(&config.store_url).await?;
        let events = store.events();
        let mut sink: Box<dyn Write> = match &args.out {
            Some(p) => Box::new(BufWriter::with_capacity(
                1 << 20,
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            )),
            None => Box::new(BufWriter::new(std::io::stdout().lock())),
        };
        let bar = spinner("{spinner} exporting: {pos} events");
        let mut count = 0u64;
        let mut write = |e: &RecordedEvent| -> anyhow::Result<()> {
            serde_json::to_writer(&mut sink, e)?;
            sink.write_all(b"\n")?;
            count += 1;
            if count.is_multiple_of(1024) {
                bar.set_position(count);
            }
            Ok(())
        };
        if args.streams.is_empty() {
            let mut after = Position::START;
            loop {
                let batch = events.read_all(after, EXPORT_PAGE).await?;
                let Some(last) = batch.last() else { break };
                after = last.global_position;
                for e in &batch {
                    write(e)?;
                }
            }
        } else {
            for s in &args.streams {
                let stream = read_whole_stream(events.as_ref(), &StreamId::new(s)).await?;
                if stream.is_empty() {
                    bail!("stream {s} has no events");
                }
                for e in &stream {
                    write(e)?;
                }
            }
        }
        sink.flush()?;
        drop(sink);
        bar.finish_and_clear();
        store.close().await;
        // With no --out the events went to stdout: report on stderr only.
        let summary = json!({"exported": count, "out": args.out});
        if args.out.is_some() {
            out.emit(&summary, || format!("exported {count} event(s)"));
        } else {
            eprintln!("exported {count} event(s)");
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_import(args: &ImportArgs, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let config = globals.config()?;
    crate::block_on(async {
        let (reader, bar): (Box<dyn BufRead>, ProgressBar) = if args.file.as_os_str() == "-" {
            (
                Box::new(BufReader::new(std::io::stdin().lock())),
                spinner("{spinner} importing: {bytes} read"),
            )
        } else {
            let file = File::open(&args.file)
                .with_context(|| format!("cannot open {}", args.file.display()))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template(
                    "importing {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            (
                Box::new(BufReader::with_capacity(1 << 20, bar.wrap_read(file))),
                bar,
            )
        };
        let store = Store::open_migrated(&config.store_url).await?;
        let bulk = store.bulk();
        let batch_max = IMPORT_BATCH.min(bulk.max_batch()).max(1);
        let (mut imported, mut skipped) = (0u64, 0u64);
        let mut batch: Vec<RecordedEvent> = Vec::with_capacity(batch_max);
        let mut first_line = 1usize;
        let flush = |batch: &mut Vec<RecordedEvent>, first_line: usize, last_line: usize| {
            let bulk = bulk.clone();
            let events = std::mem::take(batch);
            async move {
                let o = bulk.import_batch(&events).await.with_context(|| {
                    format!(
                        "cannot import lines {first_line}..={last_line}; nothing of them was stored"
                    )
                })?;
                anyhow::Ok(o)
            }
        };
        let mut line_no = 0usize;
        for (i, line) in reader.lines().enumerate() {
            line_no = i + 1;
            let line = line.with_context(|| format!("line {line_no}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let e: RecordedEvent = serde_json::from_str(&line)
                .with_context(|| format!("line {line_no} is not an exported event"))?;
            batch.push(e);
            if batch.len() >= batch_max {
                let o = flush(&mut batch, first_line, line_no).await?;
                imported += o.imported;
                skipped += o.already_present;
                first_line = line_no + 1;
            }
        }
        if !batch.is_empty() {
            let o = flush(&mut batch, first_line, line_no).await?;
            imported += o.imported;
            skipped += o.already_present;
        }
        bar.finish_and_clear();
        store.close().await;
        out.emit(
            &json!({"imported": imported, "already_present": skipped}),
            || format!("imported {imported} event(s), {skipped} already present"),
        );
        Ok(ExitCode::SUCCESS)
    })
}
