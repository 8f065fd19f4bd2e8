"""Starting the node: clear failures (exit status and message) for a model that cannot load and
for invalid parameters; autostart false leaves it to a lifecycle manager."""


from ros_helpers import requires_ros, sensor_qos, wait_until

pytestmark = requires_ros

TINY = {"model": "tiny-llava-onevision", "device": "cpu", "dtype": "float32"}


def test_a_model_that_cannot_load_fails_configure_and_exits_1(node_process):
    proc = node_process({**TINY, "model": "/nonexistent/checkpoint"}, name="livevlm_badmodel")
    rc = proc.wait_exit(90.0)
    out = proc.output()
    assert rc == 1, out
    assert "could not load model '/nonexistent/checkpoint'" in out
    assert "What to do" in out and "tiny-llava-onevision" in out
    assert "Traceback" not in out


def test_invalid_settings_fail_configure_with_every_problem_listed(node_process):
    proc = node_process({**TINY, "device": "gpu", "memory": "lru", "streams": ["a", "a"], "sample_fsp": 2.0},
                        name="livevlm_badcfg")
    rc = proc.wait_exit(90.0)
    out = proc.output()
    assert rc == 1, out
    for needle in ("device must be cpu, cuda or cuda:N", "memory must be one of", "stream names must be unique",
                   "unknown parameter 'sample_fsp' (did you mean 'sample_fps'?)"):  # L6: misspelled, not ignored
        assert needle in out, needle
    assert "loading model" not in out  # failed before touching the model


def test_out_of_range_override_is_refused_at_startup_with_exit_2(node_process):
    proc = node_process({**TINY, "sample_fps": -5.0}, name="livevlm_badrange")
    rc = proc.wait_exit(60.0)
    out = proc.output()
    assert rc == 2, out
    assert "invalid parameters" in out and "sample_fps" in out


def test_autostart_false_waits_for_a_lifecycle_manager(node_process, ros_client):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from livevlm_interfaces.srv import Ask

    diagnostics = ros_client.subscribe(DiagnosticArray, "/diagnostics")
    proc = node_process({**TINY, "autostart": False, "status_period_s": 0.2, "qos.reliability": "reliable",
                         "streams.camera.topic": "/managed/image"}, name="livevlm_managed")
    state = ros_client.call(GetState, "/livevlm_managed/get_state", GetState.Request(), timeout=90.0)
    assert state.current_state.label == "unconfigured"

    def model_status():
        for msg in reversed(diagnostics):
            for s in msg.status:
                if s.name == "/livevlm_managed: model":
                    return s
        return None

    def fresh_model_status():
        """The model's status in a diagnostics message published wholly after this call (the next one may
        already be in flight), so a state change that just returned is seen however loaded the machine is."""
        n = len(diagnostics)
        wait_until(lambda: len(diagnostics) > n + 1, 10.0, "fresh diagnostics")
        return model_status()

    wait_until(lambda: model_status() is not None, 10.0, "the node's diagnostics")
    assert model_status().level == DiagnosticStatus.ERROR and "not loaded" in model_status().message
    assert not ros_client.client(Ask, "/livevlm_managed/ask").service_is_ready()

    def transition(tid):
        return ros_client.call(ChangeState, "/livevlm_managed/change_state",
                               ChangeState.Request(transition=Transition(id=tid)), timeout=60.0).success

    assert transition(Transition.TRANSITION_CONFIGURE)
    assert transition(Transition.TRANSITION_ACTIVATE)
    r = ros_client.call(Ask, "/livevlm_managed/ask", Ask.Request(question="anything?"))
    assert not r.success and "nothing to answer from" in r.error  # active, no camera yet
    assert fresh_model_status().level == DiagnosticStatus.WARN  # loaded (random weights)
    # a best-effort camera cannot feed this reliable subscription: the node says what to change
    from sensor_msgs.msg import Image

    ros_client.node.create_publisher(Image, "/managed/image", sensor_qos(reliable=False))
    wait_until(lambda: "incompatible QoS" in proc.output(), 10.0, "the incompatible-QoS warning")
    assert "qos.reliability" in proc.output() and "RELIABILITY" in proc.output().upper()
    # cleanup frees the model, and the node can be configured again
    assert transition(Transition.TRANSITION_DEACTIVATE)
    assert transition(Transition.TRANSITION_CLEANUP)
    assert fresh_model_status().level == DiagnosticStatus.ERROR
    assert transition(Transition.TRANSITION_CONFIGURE)
    assert proc.stop() == 0
