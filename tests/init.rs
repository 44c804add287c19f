//! The deployed binary refuses to start on missing or invalid configuration, saying which
//! variable is wrong, and never printing the secret.

use std::process::Command;

fn start(vars: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clerk-sync"));
    command.env_clear().env("AWS_LAMBDA_LOG_FORMAT", "JSON");
    for (name, value) in vars {
        command.env(name, value);
    }
    let output = command.output().expect("run the clerk-sync binary");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn missing_signing_secret_stops_init_naming_the_variable() {
    let (ok, output) = start(&[("TABLE_NAME", "t")]);
    assert!(!ok);
    assert!(output.contains("CLERK_WEBHOOK_SIGNING_SECRET is not set"), "{output}");
}

#[test]
fn missing_table_name_stops_init_naming_the_variable() {
    let (ok, output) = start(&[("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]);
    assert!(!ok);
    assert!(output.contains("TABLE_NAME is not set"), "{output}");
}

#[test]
fn invalid_secret_stops_init_without_showing_it() {
    let secret = "whsec_this*is*not*base64*TopSecretValue";
    let (ok, output) = start(&[("CLERK_WEBHOOK_SIGNING_SECRET", secret), ("TABLE_NAME", "t")]);
    assert!(!ok);
    assert!(output.contains("CLERK_WEBHOOK_SIGNING_SECRET is invalid"), "{output}");
    assert!(!output.contains("TopSecretValue"), "{output}");
}
