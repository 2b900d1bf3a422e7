<?php
// Client callbacks for what a worker sends while a foreground job runs:
// WORK_DATA (setDataCallback), WORK_WARNING (setWarningCallback),
// WORK_EXCEPTION (setExceptionCallback), WORK_FAIL (setFailCallback), WORK_COMPLETE.
// Each job gets its own runTasks() so the event order is per job.
// Prints {"method_exists": {...}, "runs": {function: {"ok", "events"}}, "do_data": [...], "do_throw", "do_fail"}.
require __DIR__ . '/common.php';
function run_one($fn, $workload) {
    $c = new_client();
    $ev = array();
    $c->setDataCallback(function ($t) use (&$ev) { $ev[] = array("data", $t->unique(), $t->data()); });
    $c->setWarningCallback(function ($t) use (&$ev) { $ev[] = array("warning", $t->unique(), $t->data()); });
    $c->setExceptionCallback(function ($t) use (&$ev) { $ev[] = array("exception", $t->unique(), $t->data()); });
    $c->setFailCallback(function ($t) use (&$ev) { $ev[] = array("fail", $t->unique()); });
    $c->setCompleteCallback(function ($t) use (&$ev) { $ev[] = array("complete", $t->unique(), $t->data()); });
    $keep = $c->addTask($fn, $workload, null, "u-$fn");
    $ok = $c->runTasks();
    return array("ok" => $ok, "events" => $ev);
}
$runs = array();
foreach (array("reverse_data" => "abcdef", "warn" => "w", "throw" => "x", "fail" => "f") as $fn => $wl) {
    $runs[$fn] = run_one($fn, $wl);
}
// doNormal() surfaces WORK_DATA as GEARMAN_WORK_DATA return codes, then the result
$c = new_client();
$do = array();
do {
    $r = $c->doNormal("reverse_data", "xyz");
    $do[] = array($c->returnCode() == GEARMAN_WORK_DATA ? "WORK_DATA" :
                  ($c->returnCode() == GEARMAN_SUCCESS ? "SUCCESS" : "rc=" . $c->returnCode()), $r);
} while ($c->returnCode() == GEARMAN_WORK_DATA && count($do) < 10);
$c2 = new_client();
$r = @$c2->doNormal("fail", "f");
$do_fail = array($r, $c2->returnCode() == GEARMAN_WORK_FAIL);
out(array(
    "method_exists" => array(
        "setClientCallback" => method_exists('GearmanClient', 'setClientCallback'),
        "setWarningCallback" => method_exists('GearmanClient', 'setWarningCallback'),
        "setExceptionCallback" => method_exists('GearmanClient', 'setExceptionCallback'),
    ),
    "runs" => $runs, "do_data" => $do, "do_fail" => $do_fail,
));
