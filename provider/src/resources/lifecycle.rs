//! The steps every resource's create / read / update / delete share (the AWS provider's recipe): report
//! failures with the object's name and ID, keep a created-but-failed object in state (tainted), turn a
//! vanished object into a removal from state, retry DependencyViolation and wait until gone.

use std::future::Future;
use std::time::Duration;

use super::{object, report};
use crate::aws::wait::{self, Status};
use crate::aws::{AwsError, ErrorClass};
use crate::framework::{Diagnostics, Value};

/// The ID AWS gave the object a create call made, or `None` with the failure reported
/// ("creating EC2 VPC: …"). A create answer without an ID is a failure too.
pub(crate) fn created_id<T>(
    diags: &mut Diagnostics,
    object_name: &str,
    created: Result<T, AwsError>,
    id_of: impl FnOnce(&T) -> Option<&str>,
) -> Option<String> {
    let id = created.and_then(|out| {
        id_of(&out).map(str::to_string).ok_or_else(|| {
            AwsError::local(
                ErrorClass::Other,
                format!("AWS answered the create call without the new {object_name}'s ID"),
            )
        })
    });
    match id {
        Ok(id) => Some(id),
        Err(e) => {
            report(diags, "creating", object_name, None, &e);
            None
        }
    }
}

/// Finishes a create once AWS has given the object an ID: runs the rest (wait, settings, read back) and on
/// failure returns the planned state with the ID, so Terraform records the object as tainted.
pub(crate) async fn finish_create<F>(
    diags: &mut Diagnostics,
    object_name: &str,
    id: &str,
    planned: &Value,
    rest: F,
) -> Option<Value>
where
    F: Future<Output = Result<Option<Value>, AwsError>>,
{
    let result = rest.await.and_then(|found| {
        found.ok_or_else(|| AwsError::local(ErrorClass::NotFound, "the object vanished right after it was created"))
    });
    match result {
        Ok(state) => Some(with_planned_tags(state, planned)),
        Err(e) => {
            report(diags, "creating", object_name, Some(id), &e);
            Some(fill_from(planned, object([("id", Value::from(id))])))
        }
    }
}

/// Reads an object back right after create, retrying while it is not yet visible (eventual consistency).
pub(crate) async fn read_after_create<F, Fut>(mut read: F) -> Result<Option<Value>, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<Value>, AwsError>>,
{
    wait::retry_while(ErrorClass::NotFound, wait::PROPAGATION_TIMEOUT, || {
        let fut = read();
        async move { fut.await?.map(Some).ok_or_else(|| AwsError::local(ErrorClass::NotFound, "not yet visible")) }
    })
    .await
}

/// Refresh: the object's state, `None` when it is gone (with a log line, not an error), the prior state
/// with an error otherwise.
pub(crate) async fn read_or_remove<F>(
    diags: &mut Diagnostics,
    object_name: &str,
    state: &Value,
    read: F,
) -> Option<Value>
where
    F: Future<Output = Result<Option<Value>, AwsError>>,
{
    let id = state.attr("id").as_str().unwrap_or_default();
    match read.await {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            tracing::warn!(id, "{object_name} not found, removing from state");
            None
        }
        Err(e) => {
            report(diags, "reading", object_name, Some(id), &e);
            Some(state.clone())
        }
    }
}

/// The end of an update: the state read back, or the prior state with an error.
pub(crate) fn finish_update(
    diags: &mut Diagnostics,
    object_name: &str,
    prior: &Value,
    planned: &Value,
    result: Result<Option<Value>, AwsError>,
) -> Option<Value> {
    let id = prior.attr("id").as_str().unwrap_or_default();
    match result {
        Ok(Some(state)) => Some(with_planned_tags(state, planned)),
        Ok(None) => {
            report(
                diags,
                "updating",
                object_name,
                Some(id),
                &AwsError::local(ErrorClass::NotFound, "the object vanished"),
            );
            None
        }
        Err(e) => {
            report(diags, "updating", object_name, Some(id), &e);
            Some(prior.clone())
        }
    }
}

/// Deletes with bounded retries on DependencyViolation (NotFound counts as deleted), then waits until the
/// finder no longer sees the object. `find` answers the object's current state, `None` once it is gone.
pub(crate) async fn delete_and_wait<D, DFut, F, FFut>(
    diags: &mut Diagnostics,
    object_name: &str,
    id: &str,
    timeout: Duration,
    delete: D,
    find: F,
) where
    D: FnMut() -> DFut,
    DFut: Future<Output = Result<(), AwsError>>,
    F: FnMut() -> FFut,
    FFut: Future<Output = Result<Option<String>, AwsError>>,
{
    match wait::retry_while(ErrorClass::DependencyViolation, timeout, delete).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return,
        Err(e) => return report(diags, "deleting", object_name, Some(id), &e),
    }
    wait_gone(diags, object_name, id, timeout, find).await;
}

/// Waits until the finder no longer sees the object (`None` or NotFound); reports a timeout or another
/// error as a failed delete. `find` answers the object's current state while it is still there.
pub(crate) async fn wait_gone<F, FFut>(
    diags: &mut Diagnostics,
    object_name: &str,
    id: &str,
    timeout: Duration,
    mut find: F,
) where
    F: FnMut() -> FFut,
    FFut: Future<Output = Result<Option<String>, AwsError>>,
{
    let gone = wait::wait_for(&format!("{object_name} {id} to be deleted"), timeout, || {
        let fut = find();
        async move {
            match fut.await {
                Ok(None) => Ok(Status::Ready(())),
                Err(e) if e.is_not_found() => Ok(Status::Ready(())),
                Err(e) => Err(e),
                Ok(Some(state)) => Ok(Status::Pending(state)),
            }
        }
    })
    .await;
    if let Err(e) = gone {
        report(diags, "deleting", object_name, Some(id), &e);
    }
}

/// After create/update the user's `tags` are exactly what was planned: read-back filters out default tags,
/// which may coincide with tags the user set explicitly.
fn with_planned_tags(mut state: Value, planned: &Value) -> Value {
    if let (Some(attrs), false) = (state.attrs_mut(), planned.attr("tags").is_unknown())
        && attrs.contains_key("tags")
    {
        attrs.insert("tags".to_string(), planned.attr("tags").clone());
    }
    state
}

/// A state for an object that exists but failed later: the planned values, unknowns nulled, the known
/// values (at least the ID) filled in.
fn fill_from(planned: &Value, known: Value) -> Value {
    let mut state = planned.clone();
    if let (Some(attrs), Value::Object(k)) = (state.attrs_mut(), known) {
        for v in attrs.values_mut() {
            if !v.is_wholly_known() {
                *v = Value::Null;
            }
        }
        attrs.extend(k);
    }
    state
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_create_answer_without_id_is_a_reported_failure() {
        let mut d = Diagnostics::new();
        let id = created_id(&mut d, "EC2 VPC", Ok(None::<String>), |o| o.as_deref());
        assert!(id.is_none() && d.has_errors());
        assert!(d.0[0].summary.contains("creating EC2 VPC"), "{:?}", d.0);
        let mut ok = Diagnostics::new();
        assert_eq!(
            created_id(&mut ok, "EC2 VPC", Ok(Some("vpc-1".to_string())), |o| o.as_deref()),
            Some("vpc-1".into())
        );
        assert!(!ok.has_errors());
    }

    #[test]
    fn partial_state_keeps_the_id_and_no_unknowns() {
        let planned = object([("id", Value::Unknown), ("cidr_block", "10.0.0.0/16".into()), ("arn", Value::Unknown)]);
        let s = fill_from(&planned, object([("id", "vpc-1".into())]));
        assert_eq!(s.attr("id"), &Value::from("vpc-1"));
        assert!(s.is_wholly_known());
        assert!(s.attr("arn").is_null());
        assert_eq!(s.attr("cidr_block"), &Value::from("10.0.0.0/16"));
    }

    #[tokio::test]
    async fn failed_create_keeps_object_tainted() {
        let mut d = Diagnostics::new();
        let planned = object([("id", Value::Unknown), ("tags", Value::Null)]);
        let s = finish_create(&mut d, "EC2 VPC", "vpc-9", &planned, async {
            Err(AwsError::local(ErrorClass::Other, "boom"))
        })
        .await;
        assert!(d.has_errors());
        assert_eq!(s.unwrap().attr("id"), &Value::from("vpc-9"));
    }

    #[tokio::test]
    async fn vanished_object_is_removed_without_error() {
        let mut d = Diagnostics::new();
        let state = object([("id", "subnet-1".into())]);
        let r = read_or_remove(&mut d, "EC2 Subnet", &state, async { Ok(None) }).await;
        assert!(r.is_none() && !d.has_errors());
    }

    #[tokio::test(start_paused = true)]
    async fn delete_treats_not_found_as_done_and_waits_until_gone() {
        let mut d = Diagnostics::new();
        delete_and_wait(
            &mut d,
            "EC2 VPC",
            "vpc-1",
            Duration::from_secs(5),
            || async { Err(AwsError::local(ErrorClass::NotFound, "gone")) },
            || async { Ok(Some("available".to_string())) },
        )
        .await;
        assert!(!d.has_errors());
        let finds = Cell::new(0);
        delete_and_wait(
            &mut d,
            "EC2 VPC",
            "vpc-1",
            Duration::from_secs(5),
            || async { Ok(()) },
            || {
                finds.set(finds.get() + 1);
                let n = finds.get();
                async move { Ok(if n < 3 { Some("deleting".to_string()) } else { None }) }
            },
        )
        .await;
        assert!(!d.has_errors());
        assert_eq!(finds.get(), 3);
    }
}
