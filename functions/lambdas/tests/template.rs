//! template.yaml deploys these functions as built: what cfn-lint does not check.

fn template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap()
}

fn manifest() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap()
}

/// Values of `key: value` lines, in order.
fn values_of<'t>(text: &'t str, key: &str) -> Vec<&'t str> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(|value| value.trim().trim_matches('"'))
        .collect()
}

/// The template's resources of one type, each as its name and its lines.
fn resources<'t>(template: &'t str, kind: &str) -> Vec<(&'t str, String)> {
    let mut found = Vec::new();
    let lines: Vec<&str> = template.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':') {
            let body: Vec<&str> =
                lines[i + 1..].iter().take_while(|l| l.starts_with("   ") || l.trim().is_empty()).copied().collect();
            if body.iter().any(|l| l.trim() == format!("Type: {kind}")) {
                found.push((line.trim().trim_end_matches(':'), body.join("\n")));
            }
        }
    }
    found
}

#[test]
fn every_function_is_one_of_our_binaries_built_with_cargo_lambda() {
    let template = template();
    let functions = resources(&template, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 8, "{:?}", functions.iter().map(|f| f.0).collect::<Vec<_>>());
    let mut binaries: Vec<&str> = values_of(&template, "Binary");
    binaries.sort();
    let manifest = manifest();
    // The `name = "..."` of each [[bin]] section.
    let mut built: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| section.lines().find_map(|l| l.trim().strip_prefix("name = ")))
        .map(|name| name.trim_matches('"'))
        .collect();
    built.sort();
    assert_eq!(binaries, built, "template binaries vs [[bin]] targets");
    for (name, body) in &functions {
        assert!(body.contains("BuildMethod: rust-cargolambda"), "{name} is not built with cargo lambda");
        assert!(!body.contains("Runtime:") && !body.contains("Architectures:"), "{name} overrides the runtime");
    }
}

#[test]
fn every_function_runs_on_provided_al2023_arm64() {
    let template = template();
    let globals = template.split("Globals:").nth(1).unwrap().split("Resources:").next().unwrap();
    assert_eq!(values_of(globals, "Runtime"), vec!["provided.al2023"]);
    assert_eq!(values_of(globals, "Architectures"), vec!["[arm64]"]);
    assert_eq!(values_of(globals, "Handler"), vec!["bootstrap"]);
    assert_eq!(values_of(&template, "Runtime").len(), 1, "no function sets another runtime");
}

#[test]
fn permissions_are_least_privilege() {
    let template = template();
    assert!(!template.contains("dynamodb:*") && !template.contains("execute-api:*"), "no wildcard actions");
    for (name, body) in resources(&template, "AWS::Serverless::Function") {
        let manages_connections = body.contains("execute-api:ManageConnections");
        assert_eq!(manages_connections, name == "FanoutFunction", "{name}: only the fanout posts to connections");
        if name == "AuthorizerFunction" {
            assert!(!body.contains("dynamodb:"), "the authorizer touches no table");
            assert!(body.contains("Action: [secretsmanager:GetSecretValue]"), "it reads only its secret");
        } else if name == "ConnectFunction" {
            assert!(!body.contains("Policies:"), "$connect stores nothing, so may do nothing");
        } else {
            assert!(body.contains("Resource: !GetAtt Table.Arn"), "{name}: table access is scoped to the table");
        }
    }
    let fanout =
        resources(&template, "AWS::Serverless::Function").into_iter().find(|f| f.0 == "FanoutFunction").unwrap().1;
    assert!(fanout.contains("${WebSocketApi}/${StageName}/POST/@connections/*"), "posts scoped to this API's stage");
    assert!(fanout.contains("ReportBatchItemFailures") && fanout.contains("BisectBatchOnFunctionError: true"));
}

#[test]
fn connect_requires_a_token_checked_by_our_authorizer() {
    let template = template();
    let route = template.split("  ConnectRoute:").nth(1).unwrap().split("\n\n").next().unwrap();
    assert!(route.contains("AuthorizationType: CUSTOM") && route.contains("AuthorizerId: !Ref ConnectAuthorizer"));
    let authorizer = template.split("  ConnectAuthorizer:").nth(1).unwrap().split("\n\n").next().unwrap();
    assert!(authorizer.contains("AuthorizerType: REQUEST"));
    assert!(authorizer.contains(&format!(
        "IdentitySource: [route.request.querystring.{}]",
        livesync_handlers::authorizer::TOKEN_PARAMETER
    )));
    assert!(authorizer.contains("${AuthorizerFunction.Arn}"));
    // Tokens are never optional in a deployed stack, and the secret is never a plain value.
    assert!(template.contains("AssertDescription: Set AuthSecretArn (HS256) or AuthJwksUrl"));
    let parameters = template.split("\nParameters:").nth(1).unwrap().split("\n\n").next().unwrap();
    assert!(
        !parameters.lines().any(|l| l.trim() == "AuthSecret:") && !parameters.contains("NoEcho"),
        "no parameter holds the secret"
    );
    assert!(parameters.contains("AuthSecretArn:"));
}

#[test]
fn the_jobs_run_on_scheduler_with_retries_a_dead_letter_queue_and_an_alarm_that_emails() {
    let template = template();
    let functions = resources(&template, "AWS::Serverless::Function");
    for name in ["BackupFunction", "ReportFunction"] {
        let body = &functions.iter().find(|f| f.0 == name).unwrap().1;
        assert!(body.contains("Type: ScheduleV2"), "{name} runs on EventBridge Scheduler");
        assert!(
            body.contains("\"scheduledTime\": \"<aws.scheduler.scheduled-time>\""),
            "{name} gets its scheduled time"
        );
        assert!(body.contains("MaximumRetryAttempts: 2") && body.contains("Destination: !GetAtt JobFailures.Arn"));
        assert!(body.contains("DeadLetterConfig:"), "{name}: undeliverable invocations are kept");
        assert!(!body.contains("execute-api"), "{name} posts to no connection");
    }
    let backup = &functions.iter().find(|f| f.0 == "BackupFunction").unwrap().1;
    assert!(backup.contains("Action: [dynamodb:CreateBackup]") && !backup.contains("dynamodb:Query"));
    let report = &functions.iter().find(|f| f.0 == "ReportFunction").unwrap().1;
    assert!(report.contains("Action: [events:PutEvents]") && !report.contains("dynamodb:CreateBackup"));
    let alarms = resources(&template, "AWS::CloudWatch::Alarm");
    let names: Vec<&str> = alarms.iter().map(|a| a.0).collect();
    assert_eq!(names[..3], ["JobFailuresAlarm", "BackupErrorsAlarm", "ReportErrorsAlarm"]);
    assert!(alarms.iter().all(|a| a.1.contains("AlarmActions: [!Ref AlarmTopic]")), "one topic for every alarm");
    let subscription = &resources(&template, "AWS::SNS::Subscription")[0].1;
    assert!(subscription.contains("Protocol: email") && subscription.contains("Endpoint: !Ref AlarmEmail"));
}

#[test]
fn the_fanout_and_the_table_have_alarms_for_every_silent_failure() {
    let template = template();
    let alarms = resources(&template, "AWS::CloudWatch::Alarm");
    let watching = |metric: &str, dimension: &str| {
        alarms.iter().any(|(_, body)| body.contains(&format!("MetricName: {metric}\n")) && body.contains(dimension))
    };
    assert!(watching("Errors", "Value: !Ref FanoutFunction"), "fanout errors");
    assert!(watching("IteratorAge", "Value: !Ref FanoutFunction"), "the stream falling behind");
    let age = &alarms.iter().find(|a| a.1.contains("MetricName: IteratorAge")).unwrap().1;
    assert!(age.contains("Threshold: 60000"), "over 60 s behind");
    assert!(watching("NumberOfMessagesSent", "Value: !GetAtt FanoutFailures.QueueName"), "records given up on");
    assert!(watching("FailedPosts", "Value: fanout"), "posts failing after their retries (EMF)");
    assert!(
        watching("WriteThrottleEvents", "Value: !Ref Table") && watching("ReadThrottleEvents", "Value: !Ref Table")
    );
    assert!(watching("Throttles", "Namespace: AWS/Lambda"), "Lambda throttles");
    let functions = resources(&template, "AWS::Serverless::Function");
    let fanout = &functions.iter().find(|f| f.0 == "FanoutFunction").unwrap().1;
    assert!(fanout.contains("/DELETE/@connections/*"), "the fanout may close a connection that keeps failing");
}

#[test]
fn the_http_api_routes_to_the_handlers_routes_and_a_long_poll_fits_its_timeout() {
    use livesync_handlers::http::{PUBLISH_ROUTE, READ_ROUTE};
    let template = template();
    let function =
        resources(&template, "AWS::Serverless::Function").into_iter().find(|f| f.0 == "HttpFunction").unwrap().1;
    let events = function.split("Events:").nth(1).expect("HttpFunction has events");
    // Each API (tokens, and IAM for backends) has exactly the handler's two routes.
    let mut routes: Vec<String> = values_of(events, "ApiId")
        .into_iter()
        .zip(values_of(events, "Method").into_iter().zip(values_of(events, "Path")))
        .map(|(api, (method, path))| format!("{api} {method} {path}"))
        .collect();
    routes.sort();
    let mut handled: Vec<String> = ["!Ref BackendHttpApi", "!Ref HttpApi"]
        .iter()
        .flat_map(|api| [PUBLISH_ROUTE, READ_ROUTE].map(|route| format!("{api} {route}")))
        .collect();
    handled.sort();
    assert_eq!(routes, handled);
    let backend = template.split("  BackendHttpApi:").nth(1).unwrap().split("\n\n").next().unwrap();
    assert!(backend.contains("DefaultAuthorizer: AWS_IAM"), "backends' routes are authorized by IAM");
    assert!(values_of(events, "PayloadFormatVersion").iter().all(|v| *v == "2.0"), "the handler reads 2.0 events");
    // The longest wait, plus a read, fits the function's timeout, which fits API Gateway's 30 s.
    let timeout: u64 = values_of(&function, "Timeout")[0].parse().unwrap();
    assert!(livesync_core::reading::MAX_WAIT.as_secs() < timeout && timeout < 30, "timeout {timeout}");
    // API Gateway must wait for it too (SAM's default integration timeout is 5 s).
    let reads: Vec<&str> = events.split("Read:").skip(1).collect();
    assert_eq!(reads.len(), 2, "a read route on each API");
    for read in reads {
        let millis: u64 = values_of(read, "TimeoutInMillis")[0].parse().unwrap();
        assert!(millis > livesync_core::reading::MAX_WAIT.as_millis() as u64 && millis <= 30_000, "{millis}");
    }
    assert!(function.contains("ReservedConcurrentExecutions:"), "waiting readers cannot take every instance");
}
