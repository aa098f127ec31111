//! The cold-start and per-invocation floor: what any function of this workspace pays before its own
//! work. The same runtime as the functions (tokio current-thread, `lambda_runtime`), the same
//! release profile, no handler work, no logging, no AWS SDK. Not in template.yaml: `sam build` builds
//! only the three functions. `bench/cold_start.py` and `bench/function_cpu.py` run it beside them.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Error>(serde_json::Value::Null)
    }))
    .await
}
