//! The schedules of `template.yaml`, read as CloudFormation reads them, so that the runner fires
//! jobs exactly when the deployed stack would.
//!
//! Every `AWS::Serverless::Function` whose binary is a job (`Metadata.BuildProperties.Binary`:
//! `backup`, `report`) and whose `Events` hold a `ScheduleV2` (EventBridge Scheduler) or
//! `Schedule` (EventBridge rule) event is scheduled, with that event's expression, time zone,
//! start date and state. Values may be written with CloudFormation's short-form tags: `!Ref` to a
//! parameter and `!Sub` over parameters resolve to the parameters' defaults (or to overrides, as
//! `sam deploy --parameter-overrides` gives them); anything that only AWS can resolve is an error
//! naming the function and the field. Any invalid expression stops the runner at startup.

use livesync_core::jobs::JobName;
use livesync_core::jobs::schedule::Schedule;
use serde_norway::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One schedule of one function.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    /// The function's logical id.
    pub function: String,
    /// The schedule event's name.
    pub event: String,
    pub job: JobName,
    pub schedule: Schedule,
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not readable YAML")]
    Yaml {
        path: String,
        #[source]
        source: serde_norway::Error,
    },
    #[error("{path}: {function}, event {event}: {reason}")]
    Schedule { path: String, function: String, event: String, reason: String },
}

/// Reads the schedules of the template at `path`.
pub fn read(path: &Path, overrides: &BTreeMap<String, String>) -> Result<Vec<ScheduledJob>, TemplateError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read { path: origin.clone(), source })?;
    parse(&text, &origin, overrides)
}

/// Reads the schedules of a template's text; `origin` names it in errors.
pub fn parse(
    text: &str,
    origin: &str,
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<ScheduledJob>, TemplateError> {
    let template: Value =
        serde_norway::from_str(text).map_err(|source| TemplateError::Yaml { path: origin.to_owned(), source })?;
    let parameters = Parameters::of(&template, overrides);
    let mut jobs = Vec::new();
    let Some(resources) = template.get("Resources").and_then(Value::as_mapping) else {
        return Ok(jobs);
    };
    for (name, resource) in resources {
        let function = name.as_str().unwrap_or_default().to_owned();
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource
            .get("Metadata")
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|p| p.get("Binary"))
            .and_then(Value::as_str);
        let Some(events) = resource.get("Properties").and_then(|p| p.get("Events")).and_then(Value::as_mapping) else {
            continue;
        };
        for (event_name, event) in events {
            let kind = event.get("Type").and_then(Value::as_str);
            if !matches!(kind, Some("ScheduleV2" | "Schedule")) {
                continue;
            }
            let event_name = event_name.as_str().unwrap_or_default().to_owned();
            let fail = |reason: String| TemplateError::Schedule {
                path: origin.to_owned(),
                function: function.clone(),
                event: event_name.clone(),
                reason,
            };
            let job = binary.and_then(JobName::from_name).ok_or_else(|| {
                fail(format!(
                    "the function's binary {:?} is not a job the runner knows (backup, report)",
                    binary.unwrap_or("(none)")
                ))
            })?;
            let properties = event.get("Properties").ok_or_else(|| fail("the event has no Properties".to_owned()))?;
            let field = |name: &str| -> Result<Option<String>, TemplateError> {
                properties
                    .get(name)
                    .map(|v| parameters.resolve(v).map_err(|reason| fail(format!("{name}: {reason}"))))
                    .transpose()
            };
            let expression =
                field("ScheduleExpression")?.ok_or_else(|| fail("the event has no ScheduleExpression".to_owned()))?;
            let zone = field("ScheduleExpressionTimezone")?;
            let start = field("StartDate")?
                .map(|date| date.parse::<jiff::Timestamp>().map_err(|e| fail(format!("StartDate {date:?}: {e}"))))
                .transpose()?;
            let enabled = match (field("State")?, properties.get("Enabled").and_then(Value::as_bool)) {
                (Some(state), _) => state != "DISABLED",
                (None, Some(enabled)) => enabled,
                (None, None) => true,
            };
            let schedule =
                Schedule::parse_from(&expression, zone.as_deref(), start).map_err(|e| fail(e.to_string()))?;
            jobs.push(ScheduledJob { function: function.clone(), event: event_name, job, schedule, enabled });
        }
    }
    Ok(jobs)
}

/// The template's parameters, by their defaults and any overrides.
struct Parameters(BTreeMap<String, String>);

impl Parameters {
    fn of(template: &Value, overrides: &BTreeMap<String, String>) -> Parameters {
        let mut values = BTreeMap::new();
        if let Some(parameters) = template.get("Parameters").and_then(Value::as_mapping) {
            for (name, parameter) in parameters {
                if let (Some(name), Some(default)) = (name.as_str(), parameter.get("Default").and_then(scalar)) {
                    values.insert(name.to_owned(), default);
                }
            }
        }
        values.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Parameters(values)
    }

    fn parameter(&self, name: &str) -> Result<String, String> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("{name} is not a parameter with a Default (the runner resolves only parameters)"))
    }

    /// A value as CloudFormation would resolve it, for what can be resolved without AWS.
    fn resolve(&self, value: &Value) -> Result<String, String> {
        if let Some(text) = scalar(value) {
            return Ok(text);
        }
        let (function, argument) = match value {
            Value::Tagged(tagged) => (tagged.tag.to_string().trim_start_matches('!').to_owned(), &tagged.value),
            Value::Mapping(map) if map.len() == 1 => {
                let (key, argument) = map.iter().next().expect("one entry");
                (key.as_str().unwrap_or_default().trim_start_matches("Fn::").to_owned(), argument)
            }
            _ => return Err("expected a string".to_owned()),
        };
        match (function.as_str(), argument) {
            ("Ref", Value::String(name)) => self.parameter(name),
            ("Sub", Value::String(text)) => self.substitute(text),
            (other, _) => {
                Err(format!("!{other} cannot be resolved outside AWS; use a string, !Ref or !Sub of parameters"))
            }
        }
    }

    fn substitute(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))? + start;
            out.push_str(&self.parameter(&rest[start + 2..end])?);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  BackupSchedule:
    Type: String
    Default: cron(0 2 * * ? *)
  ReportZone:
    Type: String
    Default: Europe/Paris
Resources:
  Table:
    Type: AWS::DynamoDB::Table
  BackupFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: backup
    Properties:
      Environment:
        Variables:
          TABLE_NAME: !Ref Table
      Events:
        Nightly:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: !Ref BackupSchedule
            Input: !Sub '{"job": "backup"}'
  ReportFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: report
    Properties:
      Events:
        EndOfDay:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: "cron(55 23 * * ? *)"
            ScheduleExpressionTimezone: !Sub "${ReportZone}"
        Legacy:
          Type: Schedule
          Properties:
            Schedule: unused
            ScheduleExpression: rate(1 hour)
            Enabled: false
        Api:
          Type: Api
"#;

    #[test]
    fn schedules_are_read_with_parameters_resolved_through_short_form_tags() {
        let jobs = parse(TEMPLATE, "t.yaml", &BTreeMap::new()).unwrap();
        let found: Vec<(String, String, JobName, String, bool)> = jobs
            .iter()
            .map(|j| (j.function.clone(), j.event.clone(), j.job, j.schedule.to_string(), j.enabled))
            .collect();
        assert_eq!(
            found,
            vec![
                ("BackupFunction".into(), "Nightly".into(), JobName::Backup, "cron(0 2 * * ? *) (UTC)".into(), true),
                (
                    "ReportFunction".into(),
                    "EndOfDay".into(),
                    JobName::Report,
                    "cron(55 23 * * ? *) (Europe/Paris)".into(),
                    true
                ),
                ("ReportFunction".into(), "Legacy".into(), JobName::Report, "rate(1 hour) (UTC)".into(), false),
            ]
        );
    }

    #[test]
    fn an_override_changes_a_schedule_as_sam_deploy_parameter_overrides_would() {
        let overrides = BTreeMap::from([("BackupSchedule".to_owned(), "cron(30 4 * * ? *)".to_owned())]);
        let jobs = parse(TEMPLATE, "t.yaml", &overrides).unwrap();
        assert_eq!(jobs[0].schedule.expression(), "cron(30 4 * * ? *)");
    }

    #[test]
    fn an_invalid_expression_names_the_file_the_function_the_event_and_the_expression() {
        let broken = TEMPLATE.replace("cron(55 23 * * ? *)", "cron(55 23 * * *)");
        let error = parse(&broken, "t.yaml", &BTreeMap::new()).unwrap_err().to_string();
        assert_eq!(
            error,
            "t.yaml: ReportFunction, event EndOfDay: invalid schedule expression \"cron(55 23 * * *)\": \
             cron() takes 6 fields (minutes hours day-of-month month day-of-week year), not 5"
        );
    }

    #[test]
    fn what_only_aws_can_resolve_is_refused_by_name() {
        let broken =
            TEMPLATE.replace("ScheduleExpression: !Ref BackupSchedule", "ScheduleExpression: !GetAtt Table.Arn");
        let error = parse(&broken, "t.yaml", &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            error.contains("BackupFunction, event Nightly: ScheduleExpression: !GetAtt cannot be resolved"),
            "{error}"
        );
        let unknown = TEMPLATE.replace("!Ref BackupSchedule", "!Ref Nope");
        let error = parse(&unknown, "t.yaml", &BTreeMap::new()).unwrap_err().to_string();
        assert!(error.contains("Nope is not a parameter with a Default"), "{error}");
    }

    #[test]
    fn a_schedule_on_a_function_that_is_not_a_job_is_an_error() {
        let broken = TEMPLATE.replace("Binary: backup", "Binary: message");
        let error = parse(&broken, "t.yaml", &BTreeMap::new()).unwrap_err().to_string();
        assert!(error.contains("the function's binary \"message\" is not a job"), "{error}");
    }

    #[test]
    fn the_projects_own_template_schedules_the_backup_and_the_report() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml"));
        let jobs = read(path, &BTreeMap::new()).unwrap();
        let mut found: Vec<(JobName, String)> =
            jobs.iter().map(|j| (j.job, j.schedule.expression().to_owned())).collect();
        found.sort();
        assert_eq!(
            found,
            vec![
                (JobName::Backup, "cron(0 2 * * ? *)".to_owned()),
                (JobName::Report, "cron(55 23 * * ? *)".to_owned())
            ]
        );
    }
}
