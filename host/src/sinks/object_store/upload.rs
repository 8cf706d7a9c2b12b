//! Storing sealed objects: a stored object's events are acknowledged, a Kafka object's
//! earlier copies deleted; what fails goes back into the writer, to be retried.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::ObjectStore;

use super::superseded::delete_covered;
use super::{CONCURRENT_UPLOADS, Sealed, Writer};
use crate::pipeline::SinkError;

/// Upload `sealed`; what fails goes back into the writer, to be retried.
pub(super) async fn store_or_keep(
    stage: &str,
    store: &Arc<dyn ObjectStore>,
    writer: &Arc<Mutex<Writer>>,
    sealed: Vec<Sealed>,
) -> Result<(), SinkError> {
    if sealed.is_empty() {
        return Ok(());
    }
    upload(stage, store, writer, sealed)
        .await
        .map_err(|(failed, error)| {
            writer.lock().unwrap().sealed.extend(failed);
            error
        })
}

/// Store `sealed` objects; the ones that failed come back with the first error.
async fn upload(
    stage: &str,
    store: &Arc<dyn ObjectStore>,
    writer: &Arc<Mutex<Writer>>,
    sealed: Vec<Sealed>,
) -> Result<(), (Vec<Sealed>, SinkError)> {
    let results: Vec<_> = futures::stream::iter(sealed)
        .map(|object| async move {
            let stored = match (crate::storage::put(store.as_ref(), &object.path, object.data.clone()).await, &object.kafka) {
                (Ok(()), Some(place)) => {
                    let unstored = writer.lock().unwrap().stored(place);
                    delete_covered(store, place, &unstored).await
                }
                (Ok(()), None) => Ok(()),
                (Err(error), _) => Err(error),
            };
            match stored {
                Ok(()) => {
                    tracing::debug!(stage, path = %object.path, events = object.events, bytes = object.data.len(), "object stored");
                    ::metrics::counter!("sluice_object_store_objects_total", "stage" => stage.to_owned()).increment(1);
                    ::metrics::counter!("sluice_object_store_bytes_total", "stage" => stage.to_owned())
                        .increment(object.data.len() as u64);
                    object.held.delivered();
                    Ok(())
                }
                Err(error) => Err((object, error)),
            }
        })
        .buffer_unordered(CONCURRENT_UPLOADS)
        .collect()
        .await;
    let mut failed = Vec::new();
    let mut first_error = None;
    for result in results {
        if let Err((object, error)) = result {
            first_error.get_or_insert(error);
            failed.push(object);
        }
    }
    match first_error {
        None => Ok(()),
        Some(error) => Err((failed, error.into())),
    }
}
