//! The cold-start floor for BENCHMARKS.md: the smallest `lambda_runtime` function there is,
//! built with the same profile as clerk-sync and answering every event with a fixed 200.

use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| async { Ok::<_, Error>(json!({ "statusCode": 200 })) }))
        .await
}
