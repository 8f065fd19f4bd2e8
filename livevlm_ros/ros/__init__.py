"""The thin ROS 2 layer of livevlm_ros.

Pure logic lives in small modules that import neither rclpy nor torch, so it is unit-tested
without a ROS graph (frames are sampled by :mod:`livevlm_ros.io.frame_sampler`, the sampler
of every entry point):

* :mod:`.cdr`               the header stamp of a serialized message (sampling without deserializing).
* :mod:`.latest_frame_slot` latest-wins bounded hand-over from an image callback to the worker.
* :mod:`.parameters`        every node parameter (with descriptors) -> a validated ``NodeSettings``.
* :mod:`.questions`         validation of Ask requests, time windows, stamp <-> seconds.
* :mod:`.worker`            the single thread that owns the model: ingest round-robin, FIFO questions.
* :mod:`.status`            stream counters, ingest rate, diagnostic levels.
* :mod:`.memory_store`      each stream's memory on disk (``memory_dir``): restore, periodic saves, reset
                            (imports torch via the engine's persistence; no rclpy).
* :mod:`.watches`           Watch goals -> validated specs, the edge state machine, shared evaluation passes.
* :mod:`.watch_board`       the running watches, bounded by ``max_watches``, evaluated by the worker.
* :mod:`.evidence`          evidence stamps / thumbnails and the memory view as ROS messages (imports msgs).

:mod:`.executor` is the node's executor (rclpy's MultiThreadedExecutor, its task list bounded).
:mod:`.node` is the rclpy lifecycle node (``LiveVLMNode``) and the ``livevlm_node`` entry point.
"""
