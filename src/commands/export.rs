//! `payorch export` and `payorch import`: the event store as JSON lines,
//! one `RecordedEvent` per line.
//!
//! Export writes the whole store in global order, or the selected streams
//! (`--stream ID`, repeatable) one after another. Import appends each
//! event to its stream at its recorded version with its original event id,
//! so importing the same file twice stores nothing the second time (the
//! store recognises the ids); a stream that diverges is a conflict error.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use payorch_engine::orchestrator::read_whole_stream;
use payorch_engine::store::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
    Version,
};
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
            Some(p) => Box::new(BufWriter::new(
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
            bar.inc(1);
            Ok(())
        };
        if args.streams.is_empty() {
            let mut after = Position::START;
            loop {
                let batch = events.read_all(after, 1000).await?;
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

/// Appends one exported event at its version; `true` if it was new.
pub async fn import_event(store: &dyn EventStore, e: RecordedEvent) -> anyhow::Result<bool> {
    let expected = if e.version.0 <= 1 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(Version(e.version.0 - 1))
    };
    let request = AppendRequest {
        stream_id: e.stream_id.clone(),
        stream_type: e.stream_type,
        expected,
        events: vec![NewEvent {
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        }],
        idempotency: None,
    };
    let outcome = store.append(request).await.with_context(|| {
        format!(
            "cannot import event {} (stream {} version {})",
            e.event_id, e.stream_id, e.version.0
        )
    })?;
    Ok(!outcome.already_stored)
}

pub fn run_import(args: &ImportArgs, globals: &Globals, out: &Output) -> anyhow::Result<ExitCode> {
    let config = globals.config()?;
    crate::block_on(async {
        let reader: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
            Box::new(BufReader::new(std::io::stdin().lock()))
        } else {
            Box::new(BufReader::new(File::open(&args.file).with_context(
                || format!("cannot open {}", args.file.display()),
            )?))
        };
        let store = Store::open_migrated(&config.store_url).await?;
        let events = store.events();
        let bar = spinner("{spinner} importing: {pos} events");
        let (mut imported, mut skipped) = (0u64, 0u64);
        for (i, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("line {}", i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let e: RecordedEvent = serde_json::from_str(&line)
                .with_context(|| format!("line {} is not an exported event", i + 1))?;
            if import_event(events.as_ref(), e).await? {
                imported += 1;
            } else {
                skipped += 1;
            }
            bar.inc(1);
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
