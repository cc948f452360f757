"""``duron ui``: a local web view of the jobs of a store or a directory of logs.

* :mod:`duron._ui.sources`: where jobs come from (a job store, log files) and the
  list and job models the pages show;
* :mod:`duron._ui.timeline`: a job's operations laid out on a time axis, windowed;
* :mod:`duron._ui.pages`: the HTML (server-rendered; every page works without
  JavaScript, the small script only refreshes a running job's page);
* :mod:`duron._ui.app`: the Starlette application: routes, actions and their
  confirmation, the guards of a local server.

It needs the ``ui`` extra (Starlette and uvicorn): ``pip install 'duron[ui]'``.
"""
