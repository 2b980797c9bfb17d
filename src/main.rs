use clap::Parser;

/// jemalloc, not glibc's malloc: glibc keeps a heap per thread and returns
/// little of it, so after a relist the process held about a quarter more
/// than it uses (MALLOC_ARENA_MAX=1 showed the difference). jemalloc's
/// background thread gives freed pages back within a second, idle or not.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`malloc_conf`; the `_rjem_`
/// prefix is tikv-jemallocator's).
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    use catalio_operator::plugin;
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let (name, result) = if plugin::started_as(&argv0, plugin::PLUGIN_NAME) {
        let cli = plugin::PluginCli::parse();
        ("kubectl catalio", plugin::run(cli).await)
    } else if plugin::started_as(&argv0, plugin::COMPLETION_NAME) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        ("kubectl catalio", plugin::complete(&args).await)
    } else {
        let cli = catalio_operator::config::Cli::parse();
        ("catalio-operator", catalio_operator::run::run(cli).await)
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
