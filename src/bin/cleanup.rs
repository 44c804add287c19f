use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::dynamodb::Event;
use clerk_sync::cleanup;
use clerk_sync::store::Store;
use clerk_sync::tls::Trust;
use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let table = std::env::var("TABLE_NAME").map_err(|_| "TABLE_NAME is not set")?;
    let store = Store::connect(table, Trust::from_env()).await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Event>| {
        let deadline = UNIX_EPOCH + Duration::from_millis(event.context.deadline);
        let remaining = deadline.duration_since(SystemTime::now()).unwrap_or_default();
        let store = store.clone();
        async move { Ok::<_, Error>(cleanup::handle(&store, event.payload, cleanup::budget(remaining)).await) }
    }))
    .await
}
