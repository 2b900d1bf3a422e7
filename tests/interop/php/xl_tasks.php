<?php
// Cross-language driver (tests/interop/test_cross_language.py): PHP client flows
// with explicit unique keys and every task callback, against whatever worker
// serves the functions (a geartrain worker, or worker.php).
//
//   php xl_tasks.php tasks SPEC_JSON
//        SPEC_JSON: [[mode, function, workload, unique], ...], mode "fg" (addTask),
//        "high" (addTaskHigh) or "bg" (addTaskBackground); "" unique = none.
//        All tasks in ONE runTasks(). Prints {"ok", "rc", "events": [[kind, unique, ...], ...]}
//        with kinds created (handle), status (num, den), data, warning, exception,
//        fail, complete (data), in arrival order. (Tasks give the handle in the created
//        callback; after doNormal() returns, doJobHandle() is already empty.)
require __DIR__ . '/common.php';
$cmd = $argv[1];
$c = new_client(20000);
switch ($cmd) {
case 'tasks':
    $spec = json_decode($argv[2], true);
    $ev = array();
    $c->setCreatedCallback(function ($t) use (&$ev) { $ev[] = array("created", $t->unique(), $t->jobHandle()); });
    $c->setStatusCallback(function ($t) use (&$ev) {
        $ev[] = array("status", $t->unique(), $t->taskNumerator(), $t->taskDenominator());
    });
    $c->setDataCallback(function ($t) use (&$ev) { $ev[] = array("data", $t->unique(), $t->data()); });
    $c->setWarningCallback(function ($t) use (&$ev) { $ev[] = array("warning", $t->unique(), $t->data()); });
    $c->setExceptionCallback(function ($t) use (&$ev) { $ev[] = array("exception", $t->unique(), $t->data()); });
    $c->setFailCallback(function ($t) use (&$ev) { $ev[] = array("fail", $t->unique()); });
    $c->setCompleteCallback(function ($t) use (&$ev) { $ev[] = array("complete", $t->unique(), $t->data()); });
    $keep = array();  // GearmanTask objects must live until runTasks() is done
    foreach ($spec as $s) {
        list($mode, $fn, $workload, $unique) = $s;
        $u = $unique === "" ? null : $unique;
        if ($mode === "bg") $keep[] = $c->addTaskBackground($fn, $workload, null, $u);
        elseif ($mode === "high") $keep[] = $c->addTaskHigh($fn, $workload, null, $u);
        else $keep[] = $c->addTask($fn, $workload, null, $u);
    }
    $ok = $c->runTasks();
    out(array("ok" => $ok, "rc" => $c->returnCode(), "events" => $ev));
    break;
default:
    fwrite(STDERR, "unknown command $cmd\n");
    exit(2);
}
