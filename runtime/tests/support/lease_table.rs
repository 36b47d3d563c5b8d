//! The lease table for the runtime's DynamoDB tests: a client for an endpoint (one attempt, short timeouts, so an
//! unreachable store fails fast) and the table as tandem's Terraform creates it. Included, with support/moto.rs,
//! by several test crates.
#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use tandem_runtime::membership::lease::Holder;

pub async fn client(endpoint: &str) -> Client {
    Client::new(&crate::moto::sdk_config(endpoint, Duration::from_secs(2)).await)
}

pub const TABLE: &str = "tandem-test-leases";

pub async fn create_table(c: &Client) {
    c.create_table()
        .table_name(TABLE)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("group")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("group").key_type(KeyType::Hash).build().expect("key"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
}

pub fn me(node: &str) -> Holder {
    Holder { node: node.into(), incarnation: 1 }
}
