"""Timeframes are read in the local time of the fare event's stop.

Reference, timeframes.txt: "the event time is computed in local time using the local timezone,
as determined by the stop_timezone, if specified, of the stop or parent station for the fare
event. If not specified, the feed's agency timezone should be used instead."  stops.txt,
stop_timezone: "If the location has a parent station, it inherits the parent station's timezone
instead of applying its own."
"""

from __future__ import annotations

from fare.engine import price
from tests.fare_helpers import Taps, at, feed

FILES = dict(
    stops="stop_id,stop_name,stop_timezone,location_type,parent_station\n"
          "ny,New York stop,,0,\n"
          "chi,Chicago stop,America/Chicago,0,\n"
          "station,Chicago station,America/Chicago,1,\n"
          "platform,Platform,America/Los_Angeles,0,station\n",
    routes="route_id,route_short_name,route_type,network_id\nr,R,3,n\n",
    calendar="service_id,monday,tuesday,wednesday,thursday,friday,saturday,sunday,"
             "start_date,end_date\nall,1,1,1,1,1,1,1,20240101,20241231\n",
    timeframes="timeframe_group_id,start_time,end_time,service_id\npeak,07:00:00,09:00:00,all\n"
               "off,00:00:00,07:00:00,all\noff,09:00:00,24:00:00,all\n",
    fare_products="fare_product_id,amount,currency\npeak,4.00,USD\nregular,2.00,USD\n",
    fare_leg_rules="network_id,from_timeframe_group_id,fare_product_id\nn,peak,peak\n"
                   "n,off,regular\n",
)


def fare_at(stop: str, hour: int, minute: int, card: str) -> int:
    f = feed(**FILES)  # agency time zone America/New_York
    t = Taps(at(2024, 3, 4, hour, minute), card=card)
    return sum(c.amount for c in price(f, [t(0, stop, "r")]))


def test_stop_timezone_decides_the_timeframe() -> None:
    # 09:30 in New York is 08:30 in Chicago: peak (4.00) at the Chicago stop, off peak (2.00)
    # at the New York one, whose stop_timezone is empty ("the feed's agency timezone").
    assert fare_at("chi", 9, 30, "c1") == 400
    assert fare_at("ny", 9, 30, "c2") == 200
    assert fare_at("ny", 8, 30, "c3") == 400
    assert fare_at("chi", 7, 30, "c4") == 200  # 06:30 in Chicago


def test_platform_takes_its_parent_stations_zone() -> None:
    # The platform says Los Angeles (06:30 at 09:30 New York: before peak) but inherits the
    # station's Chicago (08:30: peak).
    assert fare_at("platform", 9, 30, "c1") == 400
    assert fare_at("platform", 11, 30, "c2") == 200  # 10:30 in Chicago: off peak
