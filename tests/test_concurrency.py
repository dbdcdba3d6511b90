"""Sharing a model between threads: runs take turns, give the sequential results bitwise, and a
run that has to wait says so and can still be cancelled."""

import threading

import numpy as np
import pytest

from dragwidget import DragCancelled, DragEditor, DragRequest, load_model

WAIT = 120  # seconds: only reached when something is broken (a run that never waits or never ends)


def request(make_image, seed, points, prompt="a red disc"):
    return DragRequest(make_image(48, 40, seed=seed), points, prompt=prompt)


A = [{"handle": [10, 12], "target": [30, 20]}]
B = [{"handle": [30, 30], "target": [18, 24]}]


def sequential(tiny_model_dir, config, job, cache):
    """The result of `job` run alone, on a model and editor of its own."""
    return DragEditor(load_model(tiny_model_dir, device="cpu"), config=config, cache_dir=cache).run(job).image


class Worker(threading.Thread):
    """Runs `call` and keeps its result or its exception for the test thread to look at."""

    def __init__(self, call, start_together=None):
        super().__init__(daemon=True)
        self.call, self.start_together = call, start_together
        self.result = self.error = None

    def run(self):
        try:
            if self.start_together is not None:
                self.start_together.wait(WAIT)
            self.result = self.call()
        except BaseException as error:  # handed to the test thread
            self.error = error

    def outcome(self):
        self.join(WAIT)
        assert not self.is_alive(), "a run did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def at_once(*calls):
    """Start all calls at the same moment, each in its own thread, and return their results."""
    together = threading.Barrier(len(calls))
    workers = [Worker(call, together) for call in calls]
    for worker in workers:
        worker.start()
    return [worker.outcome() for worker in workers]


@pytest.mark.parametrize("same_image", [False, True], ids=["two images", "one image"])
def test_two_threads_on_one_editor_get_the_sequential_results(
        same_image, fresh_model, small_config, tiny_model_dir, make_image, tmp_path):
    editor = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path / "shared")
    first = request(make_image, 20, A)
    second = request(make_image, 20 if same_image else 21, B)

    got = at_once(lambda: editor.run(first), lambda: editor.run(second))

    for job, result in zip((first, second), got):
        expected = sequential(tiny_model_dir, small_config, job, tmp_path / "alone")
        assert np.array_equal(np.asarray(result.image), np.asarray(expected))
    # ... and the editor is still right afterwards, for a new image too.
    third = request(make_image, 22, A)
    assert np.array_equal(np.asarray(editor.run(third).image),
                          np.asarray(sequential(tiny_model_dir, small_config, third, tmp_path / "alone")))


def test_two_editors_sharing_one_model_take_turns(fresh_model, small_config, tiny_model_dir, make_image, tmp_path):
    """Two widgets given the same `editor=` share it; two editors on one model share the UNet too."""
    one = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path / "one")
    two = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path / "two")
    first, second = request(make_image, 23, A), request(make_image, 24, B)

    got = at_once(lambda: one.run(first), lambda: two.run(second))

    for job, result in zip((first, second), got):
        expected = sequential(tiny_model_dir, small_config, job, tmp_path / "alone")
        assert np.array_equal(np.asarray(result.image), np.asarray(expected))


def hold_in_drag(editor, job):
    """Start `editor.run(job)` in a thread that stops at its first drag step until `go_on` is set."""
    busy, go_on = threading.Event(), threading.Event()

    def hold(event):
        if event.stage == "drag" and event.step == 1 and not busy.is_set():
            busy.set()
            go_on.wait(WAIT)

    running = Worker(lambda: editor.run(job, progress=hold))
    running.start()
    assert busy.wait(WAIT)
    return running, go_on


def test_a_waiting_run_says_so_and_can_be_cancelled(fresh_model, small_config, tiny_model_dir, make_image, tmp_path):
    first, third = request(make_image, 25, A), request(make_image, 27, B)
    expected = [sequential(tiny_model_dir, small_config, job, tmp_path / "alone") for job in (first, third)]
    editor = DragEditor(fresh_model, config=small_config, cache_dir=tmp_path / "shared")
    running, go_on = hold_in_drag(editor, first)

    # A second run waits, says so once, and ends at once when cancelled.
    cancelled, waiting = threading.Event(), threading.Event()
    events = []
    record = lambda event: (events.append(event), event.stage == "waiting" and waiting.set())
    doomed = Worker(lambda: editor.run(request(make_image, 26, B), progress=record, cancel=cancelled.is_set))
    doomed.start()
    assert waiting.wait(WAIT)
    cancelled.set()
    with pytest.raises(DragCancelled):
        doomed.outcome()
    assert [(e.stage, e.step, e.total) for e in events] == [("waiting", 0, 0)]
    assert events[0].message == "waiting for another run on this model to finish"

    # A third waits too, then runs once the first is done; the cancelled one disturbed nothing.
    third_events, third_told = [], threading.Event()
    patient = Worker(lambda: editor.run(third, progress=lambda e: (third_events.append(e), third_told.set())))
    patient.start()
    assert third_told.wait(WAIT)
    go_on.set()
    assert np.array_equal(np.asarray(running.outcome().image), np.asarray(expected[0]))
    assert np.array_equal(np.asarray(patient.outcome().image), np.asarray(expected[1]))
    stages = [e.stage for e in third_events]
    assert stages[0] == "waiting" and stages.count("waiting") == 1 and "decode" in stages


def test_loading_a_model_waits_for_a_run(fresh_model, small_config, tiny_model_dir, make_image, tmp_path):
    """Loading patches torch for the whole process (meta device, no weight init): not during a run."""
    job = request(make_image, 28, A)
    expected = sequential(tiny_model_dir, small_config, job, tmp_path / "alone")
    running, go_on = hold_in_drag(DragEditor(fresh_model, config=small_config, cache_dir=tmp_path / "shared"), job)
    release = threading.Timer(0.2, go_on.set)  # lets the run go on while this thread waits to load
    release.start()
    with pytest.warns(UserWarning, match="waiting for the run in progress to finish before loading"):
        load_model(tiny_model_dir, device="cpu")
    release.join()
    assert np.array_equal(np.asarray(running.outcome().image), np.asarray(expected))
