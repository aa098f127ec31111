//! Stack discovery: a stack's resources (logical ID -> type, physical ID), outputs and parameters.

use crate::error::{CliError, Result, sdk};
use aws_sdk_cloudformation::Client;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Stack {
    pub name: String,
    /// Logical ID -> (resource type, physical ID).
    pub resources: BTreeMap<String, (String, String)>,
    pub outputs: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
}

pub async fn discover(sdk_config: &aws_config::SdkConfig, name: &str) -> Result<Stack> {
    let cfn = Client::new(sdk_config);
    let described = cfn.describe_stacks().stack_name(name).send().await;
    let described = match described {
        Ok(out) => out,
        // CloudFormation answers a missing stack with a ValidationError naming it.
        Err(e)
            if e.as_service_error().is_some_and(|se| {
                se.meta().code() == Some("ValidationError")
                    && se
                        .meta()
                        .message()
                        .is_some_and(|m| m.contains("does not exist"))
            }) =>
        {
            return Err(CliError::not_found(format!(
                "stack {name:?} does not exist (in this account and region)"
            )));
        }
        Err(e) => return Err(sdk(&format!("describe stack {name:?}"), e)),
    };
    let Some(found) = described.stacks().first() else {
        return Err(CliError::not_found(format!(
            "stack {name:?} does not exist"
        )));
    };
    let mut stack = Stack {
        name: found.stack_name().unwrap_or(name).to_string(),
        ..Default::default()
    };
    for o in found.outputs() {
        if let (Some(k), Some(v)) = (o.output_key(), o.output_value()) {
            stack.outputs.insert(k.to_string(), v.to_string());
        }
    }
    for p in found.parameters() {
        if let (Some(k), Some(v)) = (p.parameter_key(), p.parameter_value()) {
            stack.parameters.insert(k.to_string(), v.to_string());
        }
    }
    let summaries = cfn
        .list_stack_resources()
        .stack_name(name)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| sdk(&format!("list the resources of stack {name:?}"), e))?;
    for r in summaries {
        if let (Some(lid), Some(t), Some(id)) = (
            r.logical_resource_id(),
            r.resource_type(),
            r.physical_resource_id(),
        ) {
            stack
                .resources
                .insert(lid.to_string(), (t.to_string(), id.to_string()));
        }
    }
    Ok(stack)
}
