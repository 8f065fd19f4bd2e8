"""``livevlm_soak``: a sustained-load benchmark of the livevlm node as its own process.

Modules, one job each:

* :mod:`.features`  the two switches for optional node features (Watch action, checkpoints);
* :mod:`.load`      load plans (camera frames with malformed ones and a stamp jump, questions)
  and the rclpy publishers/clients that play them;
* :mod:`.sampler`   process RSS, the node's ``~/memory_status``, one sample row every period;
* :mod:`.stats`     least-squares slope with its standard error, percentiles, question
  accounting and the pass/fail verdict (pure, no ROS);
* :mod:`.report`    the JSON report and the PNG plots (matplotlib Agg);
* :mod:`.cli`       the console script: start the node, run the load, write the report.
"""
