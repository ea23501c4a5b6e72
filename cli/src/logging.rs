//! The log of `serve` and its web worker: tracing to standard error, filtered by `INKAN_LOG`
//! (default `info`).

/// Installs the subscriber (once; later calls do nothing).
pub fn init() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = tracing_subscriber::EnvFilter::try_from_env("INKAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // sled logs one trace line from a crossbeam-epoch deferred closure, which can run while a
    // worker thread's thread-locals are being destroyed; the fmt layer's thread-local buffer is
    // gone by then and the process aborts. Its trace lines are page-cache internals, so they
    // are never let through, whatever INKAN_LOG says.
    let no_sled_trace = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && (meta.target() == "sled" || meta.target().starts_with("sled::")))
    });
    let _ = tracing_subscriber::registry()
        .with(no_sled_trace)
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
        .try_init();
}
