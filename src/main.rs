use clerk_sync::config::Config;
use clerk_sync::handler::App;
use lambda_http::{Error, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    clerk_sync::logging::init();
    let config = Config::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    let app = App::connect(config).await;
    lambda_http::run(service_fn(|request| async { Ok::<_, Error>(app.handle(request).await) })).await
}
