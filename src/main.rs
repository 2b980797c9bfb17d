use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = catalio_operator::config::Cli::parse();
    match catalio_operator::run::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("catalio-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
