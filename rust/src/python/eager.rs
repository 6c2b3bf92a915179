//! `sipr._core.TaskStarter`: handler Tasks whose first step runs at once on
//! Python 3.11 (decisions 0048, 0066, 0067; python/sipr/_eager.py).
//!
//! A Task's constructor asks its loop to `call_soon` its first step and adds
//! itself to asyncio's task registry, both through attribute lookups. While
//! the starter constructs a handler Task, the loop's `call_soon` is its
//! `catch_step`, which keeps the step (run at once after), and the
//! registry's `add` (installed for good: only Task constructors call it)
//! skips the registration (a Task done in its first step is never listed by
//! `all_tasks()`; one that suspends is added after its step). In Rust rather
//! than Python: the attribute swaps and a Python frame per request were
//! ~3k instructions. The loop's `call_soon` is not replaced for good: every
//! future's callbacks go through it, and passing them on cost more.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// A captured first step: the Task's step callable and its context.
type Step = (Py<PyAny>, Option<Py<PyAny>>);

#[pyclass(module = "sipr._core", name = "TaskStarter", frozen)]
pub struct PyTaskStarter {
    event_loop: Py<PyAny>,
    /// The registry's own `add`; None when registrations are not skipped.
    registry_add: Option<Py<PyAny>>,
    task_type: Py<PyAny>,
    /// `loop=` and `name=` for each Task.
    task_kwargs: Py<PyDict>,
    /// Set only while `start` constructs a Task (no Python code runs then,
    /// so no other thread can see it set).
    capturing: AtomicBool,
    step: Mutex<Option<Step>>,
}

#[pymethods]
impl PyTaskStarter {
    #[new]
    #[pyo3(signature = (event_loop, registry_add, task_type, name))]
    fn new(
        py: Python<'_>,
        event_loop: Py<PyAny>,
        registry_add: Option<Py<PyAny>>,
        task_type: Py<PyAny>,
        name: Py<PyAny>,
    ) -> PyResult<Self> {
        let task_kwargs = PyDict::new(py);
        task_kwargs.set_item("loop", &event_loop)?;
        task_kwargs.set_item("name", name)?;
        Ok(PyTaskStarter {
            event_loop,
            registry_add,
            task_type,
            task_kwargs: task_kwargs.unbind(),
            capturing: AtomicBool::new(false),
            step: Mutex::new(None),
        })
    }

    /// The loop's `call_soon` while a handler Task is constructed: keeps its
    /// first step. Anything else goes to the loop's own method.
    #[pyo3(signature = (callback, *args, context=None))]
    fn catch_step(
        &self,
        py: Python<'_>,
        callback: Py<PyAny>,
        args: &Bound<'_, PyTuple>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if args.is_empty() {
            let mut step = self.step.lock();
            if step.is_none() {
                *step = Some((callback, context));
                return Ok(py.None());
            }
        }
        let event_loop = self.event_loop.bind(py);
        let own = event_loop.get_type().getattr(intern!(py, "call_soon"))?;
        let mut all = Vec::with_capacity(args.len() + 2);
        all.push(event_loop.clone());
        all.push(callback.into_bound(py));
        all.extend(args.iter());
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "context"), context)?;
        Ok(own.call(PyTuple::new(py, all)?, Some(&kwargs))?.unbind())
    }

    /// The registry's `add` while installed: skips a handler Task being
    /// constructed, passes every other Task on.
    fn add(&self, py: Python<'_>, task: Py<PyAny>) -> PyResult<()> {
        if self.capturing.load(Ordering::Relaxed) {
            return Ok(());
        }
        if let Some(add) = &self.registry_add {
            add.call1(py, (task,))?;
        }
        Ok(())
    }

    /// A Task running `coro`, its first step already run: done when the
    /// handler finished without suspending, else listed by `all_tasks()`.
    fn start(slf: &Bound<'_, Self>, coro: Py<PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let event_loop = this.event_loop.bind(py);
        let call_soon = intern!(py, "call_soon");
        event_loop.setattr(call_soon, slf.getattr(intern!(py, "catch_step"))?)?;
        this.capturing.store(true, Ordering::Relaxed);
        let task = this
            .task_type
            .call(py, (coro,), Some(this.task_kwargs.bind(py)));
        this.capturing.store(false, Ordering::Relaxed);
        event_loop.delattr(call_soon)?;
        let taken = this.step.lock().take();
        let task = task?;
        let Some((step, context)) = taken else {
            return Err(PyRuntimeError::new_err(
                "the Task did not schedule its first step through the loop's call_soon",
            ));
        };
        match context {
            Some(context) => context.call_method1(py, intern!(py, "run"), (step,))?,
            None => step.call0(py)?,
        };
        if let Some(add) = &this.registry_add {
            if !task.call_method0(py, intern!(py, "done"))?.is_truthy(py)? {
                add.call1(py, (&task,))?;
            }
        }
        Ok(task)
    }
}
