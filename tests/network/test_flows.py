"""The flow network over time, against hand-computed schedules."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from clustersim.network.flows import FlowNetwork


def one_link(*links):
    return (np.array(links, dtype=np.int64), np.ones(len(links)))


def test_flows_speed_up_when_others_finish():
    # A (10 B) and B (20 B) share a 10 B/s link: both at 5 B/s until A ends at t=2, then B
    # alone at 10 B/s drains its last 10 B by t=3.
    env = simpy.Environment()
    net = FlowNetwork(env, np.array([10.0]))
    a = net.start_batch([one_link(0)], np.array([10.0]))
    b = net.start_batch([one_link(0)], np.array([20.0]))
    times = {}
    a.callbacks.append(lambda _: times.setdefault("a", env.now))
    b.callbacks.append(lambda _: times.setdefault("b", env.now))
    env.run()
    assert times == {"a": pytest.approx(2.0), "b": pytest.approx(3.0)}


def test_latency_delays_the_start():
    env = simpy.Environment()
    net = FlowNetwork(env, np.array([10.0]))
    done = net.start_batch([one_link(0)], np.array([10.0]), latency_s=0.5)
    env.run(done)
    assert env.now == pytest.approx(1.5)


def test_bytes_on_every_link_equal_the_bytes_sent_and_received():
    # a flow split half/half over two parallel paths 0->{1,2}->3
    env = simpy.Environment()
    net = FlowNetwork(env, np.array([10.0, 5.0, 5.0, 10.0]))
    route = (np.array([0, 1, 2, 3]), np.array([1.0, 0.5, 0.5, 1.0]))
    env.run(net.start_batch([route], np.array([40.0])))
    assert net.link_bytes.tolist() == [40.0, 20.0, 20.0, 40.0]
    assert env.now == pytest.approx(4.0)
    assert net.link_busy_s.tolist() == pytest.approx([4.0] * 4)
    assert net.link_peak_util.tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0])


def test_empty_routes_finish_at_once():
    env = simpy.Environment()
    net = FlowNetwork(env, np.array([10.0]))
    env.run(net.start_batch([(np.zeros(0, np.int64), np.zeros(0))], np.array([1e9])))
    assert env.now == 0.0


def test_a_batch_waits_for_its_slowest_flow():
    env = simpy.Environment()
    net = FlowNetwork(env, np.array([10.0, 1.0]))
    env.run(net.start_batch([one_link(0), one_link(1)], np.array([10.0, 10.0])))
    assert env.now == pytest.approx(10.0)
