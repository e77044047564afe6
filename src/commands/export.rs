//! `payorch export` and `payorch import`: the event store as JSON lines,
//! one `RecordedEvent` per line.
//!
//! Export writes the whole store in global order (pages of 10,000), or the
//! selected streams (`--stream ID`, repeatable) one after another. A
//! whole-store export includes every event committed before it started:
//! on Postgres it reads until it has passed the highest committed
//! position, waiting (up to two minutes, then an error) while `read_all`
//! holds events back behind a transaction still open elsewhere on the
//! server, instead of stopping early.
//!
//! Import, not through the append path, one of two ways:
//!
//! * **Into an empty Postgres store: one transaction** (`BulkLoad`). The
//!   events table is locked, its indexes and unique constraints dropped,
//!   every batch of 50,000 sent with `COPY ... FROM STDIN`, then the
//!   indexes re-created (one sort each instead of a btree insert per row)
//!   and the transaction committed. Any failure, or an interrupted
//!   import, rolls it all back: the store stays empty with its
//!   constraints. `--per-batch` opts out.
//! * **Otherwise (SQLite, a store with events): one transaction per batch**
//!   of up to 50,000 through the store's `BulkImport` (on Postgres four
//!   round trips per batch and one COPY); a refused batch stores nothing
//!   of itself, earlier batches stay (re-running the import skips them).
//!
//! A reader thread decodes the next batch while the store writes the last
//! one. Each event keeps its stream, version and event id, so importing
//! the same file twice stores nothing the second time (ids already stored
//! at the same place are skipped); every line must parse as an exported
//! event, each stream must continue where the store (or the file) left
//! it, and an event id may appear once, else the import is refused (a
//! conflict naming the stream, or the reused id). A progress bar shows
//! bytes read, then a spinner while the indexes are re-created.

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
    /// One transaction per batch even into an empty Postgres store (by
    /// default that import is one transaction that locks the events table
    /// and re-creates its indexes at the end).
    #[arg(long)]
    per_batch: bool,
}

/// Events per `read_all` page of an export.
const EXPORT_PAGE: usize = 10_000;

/// How long an export waits for transactions elsewhere on the server that
/// hold back events it must include.
const EXPORT_HOLD_BACK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Events per import transaction (at most the store's own limit).
const IMPORT_BATCH: usize = 50_000;

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
            // Everything committed before the export started: on Postgres
            // read_all may hold recent events back while a transaction
            // that began earlier is still open anywhere on the server, so
            // an empty page before the head means "wait", not "done".
            let head = store.committed_head().await?;
            let mut after = Position::START;
            let mut waited_since: Option<std::time::Instant> = None;
            loop {
                let batch = events.read_all(after, EXPORT_PAGE).await?;
                let Some(last) = batch.last() else {
                    let Some(head) = head.filter(|h| *h > after) else {
                        break;
                    };
                    let since = *waited_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > EXPORT_HOLD_BACK_WAIT {
                        bail!(
                            "events after position {} (up to {}) stayed held back for {} s by \
                             a transaction still open on the Postgres server; the export \
                             never skips events: run it again when that transaction ends",
                            after.0,
                            head.0,
                            EXPORT_HOLD_BACK_WAIT.as_secs()
                        );
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                waited_since = None;
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
        // Open the input before the store, so a missing file is reported
        // as such.
        let (input, bar): (Option<File>, ProgressBar) = if args.file.as_os_str() == "-" {
            (None, spinner("{spinner} importing: {bytes} read"))
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
            (Some(file), bar)
        };
        let store = Store::open_migrated(&config.store_url).await?;
        let bulk = store.bulk();
        let mut load = if args.per_batch {
            None
        } else {
            store.begin_bulk_load().await?
        };
        let mode = if load.is_some() {
            "one_transaction"
        } else {
            "per_batch"
        };
        let store_max = load.as_ref().map_or(bulk.max_batch(), |l| l.max_batch());
        let batch_max = IMPORT_BATCH.min(store_max).max(1);

        // Reading and parsing run on their own thread, one batch ahead of
        // the store: the next batch is decoded while the last one is
        // written.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Batch>>(1);
        let reader_bar = bar.clone();
        let reader = std::thread::spawn(move || {
            let reader: Box<dyn BufRead> = match input {
                Some(file) => Box::new(BufReader::with_capacity(
                    1 << 20,
                    reader_bar.wrap_read(file),
                )),
                None => Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())),
            };
            read_batches(reader, batch_max, |b| tx.blocking_send(b).is_ok());
        });

        let (mut imported, mut skipped) = (0u64, 0u64);
        let mut failure = None;
        while let Some(next) = rx.recv().await {
            let result = match next {
                Ok(batch) => match load.as_mut() {
                    Some(load) => load.load(&batch.events).await.map(|n| (n, 0)).with_context(
                        || {
                            format!(
                                "cannot import lines {}..={}; nothing was stored (the import into \
                             an empty store is one transaction)",
                                batch.first_line, batch.last_line
                            )
                        },
                    ),
                    None => bulk
                        .import_batch(&batch.events)
                        .await
                        .map(|o| (o.imported, o.already_present))
                        .with_context(|| {
                            format!(
                                "cannot import lines {}..={}; nothing of them was stored",
                                batch.first_line, batch.last_line
                            )
                        }),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok((new, present)) => {
                    imported += new;
                    skipped += present;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // Dropping the receiver stops the reader at its next batch.
        drop(rx);
        let _ = reader.join();
        bar.finish_and_clear();
        if let Some(load) = load.take() {
            if failure.is_some() {
                if let Err(e) = load.abort().await {
                    tracing::warn!(error = %e, "import: rolling back the bulk load failed");
                }
            } else {
                let spin = spinner("{spinner} {msg} {elapsed}");
                spin.set_message(format!(
                    "checking {imported} event(s) and re-creating the indexes"
                ));
                spin.enable_steady_tick(std::time::Duration::from_millis(200));
                if let Err(e) = load.finish().await {
                    failure = Some(anyhow::Error::new(e).context(
                        "cannot finish the import; nothing was stored (the import into an \
                         empty store is one transaction)",
                    ));
                }
                spin.finish_and_clear();
            }
        }
        store.close().await;
        if let Some(e) = failure {
            return Err(e);
        }
        out.emit(
            &json!({"imported": imported, "already_present": skipped, "mode": mode}),
            || {
                format!(
                    "imported {imported} event(s), {skipped} already present ({})",
                    mode.replace('_', " ")
                )
            },
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// A batch of decoded lines for one import transaction.
struct Batch {
    events: Vec<RecordedEvent>,
    first_line: usize,
    last_line: usize,
}

/// Decodes `reader` into batches of `batch_max` events, handing each to
/// `send` (which returns `false` to stop); a bad line is sent as an error
/// naming it, and ends the reading.
fn read_batches(
    reader: impl BufRead,
    batch_max: usize,
    mut send: impl FnMut(anyhow::Result<Batch>) -> bool,
) {
    let mut events = Vec::with_capacity(batch_max);
    let (mut first_line, mut line_no) = (1usize, 0usize);
    for (i, line) in reader.lines().enumerate() {
        line_no = i + 1;
        let parsed = line
            .with_context(|| format!("line {line_no}"))
            .and_then(|line| {
                if line.trim().is_empty() {
                    return Ok(None);
                }
                serde_json::from_str::<RecordedEvent>(&line)
                    .map(Some)
                    .with_context(|| format!("line {line_no} is not an exported event"))
            });
        match parsed {
            Ok(Some(e)) => events.push(e),
            Ok(None) => continue,
            Err(e) => {
                send(Err(e));
                return;
            }
        }
        if events.len() >= batch_max {
            let batch = Batch {
                events: std::mem::replace(&mut events, Vec::with_capacity(batch_max)),
                first_line,
                last_line: line_no,
            };
            if !send(Ok(batch)) {
                return;
            }
            first_line = line_no + 1;
        }
    }
    if !events.is_empty() {
        send(Ok(Batch {
            events,
            first_line,
            last_line: line_no,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::read_batches;

    fn line(stream: &str, version: u64) -> String {
        format!(
            r#"{{"global_position":{version},"stream_id":"{stream}","stream_type":"order","version":{version},"event_id":"{}","event_type":"placed","schema_version":1,"payload":{{}},"metadata":{{}},"recorded_at":"2026-01-01T00:00:00Z"}}"#,
            uuid::Uuid::now_v7()
        )
    }

    #[test]
    fn batches_carry_their_line_numbers_and_a_bad_line_stops_the_reading() {
        let text = [
            line("o1", 1),
            String::new(),
            line("o1", 2),
            line("o1", 3),
            "{not json".to_owned(),
            line("o1", 4),
        ]
        .join("\n");
        let mut got = Vec::new();
        read_batches(text.as_bytes(), 2, |b| {
            got.push(b.map(|b| (b.events.len(), b.first_line, b.last_line)));
            true
        });
        assert_eq!(got.len(), 2, "one full batch, then the error");
        assert_eq!(got[0].as_ref().expect("batch"), &(2, 1, 3));
        let err = format!("{:#}", got[1].as_ref().expect_err("bad line"));
        assert!(err.contains("line 5 is not an exported event"), "{err}");
    }
}
