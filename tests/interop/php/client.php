<?php
// Small GearmanClient driver; prints one JSON document.
//
//   php client.php do FUNCTION WORKLOAD          doNormal: {"result", "rc"}
//   php client.php bg FUNCTION WORKLOAD [UNIQUE] doBackground: {"handle", "rc"}
//   php client.php status HANDLE...              jobStatus of each: [[known, running, num, den], ...]
//   php client.php watch HANDLE                  jobStatus every 20 ms until the job is unknown:
//                                                {"seen": distinct consecutive statuses, "after": final}
//   php client.php taskstatus HANDLE...          addTaskStatus for all in ONE runTasks with a status
//                                                callback: {"ok", "got": {handle: [known, running, num, den]}}
require __DIR__ . '/common.php';
$cmd = $argv[1];
$c = new_client();
switch ($cmd) {
case 'do':
    $r = $c->doNormal($argv[2], $argv[3]);
    out(array("result" => $r, "rc" => $c->returnCode()));
    break;
case 'bg':
    $h = $c->doBackground($argv[2], $argv[3], isset($argv[4]) ? $argv[4] : null);
    out(array("handle" => $h, "rc" => $c->returnCode()));
    break;
case 'status':
    $all = array();
    foreach (array_slice($argv, 2) as $h) $all[] = $c->jobStatus($h);
    out($all);
    break;
case 'watch':
    $h = $argv[2];
    $seen = array();
    $end = microtime(true) + 20;
    do {
        $s = $c->jobStatus($h);
        if (!$seen || end($seen) !== $s) $seen[] = $s;
        usleep(20000);
    } while ($s[0] && microtime(true) < $end);
    out(array("seen" => $seen, "after" => $c->jobStatus($h)));
    break;
case 'taskstatus':
    $got = array();
    $c->setStatusCallback(function ($t) use (&$got) {
        $got[$t->jobHandle()] = array($t->isKnown(), $t->isRunning(), $t->taskNumerator(), $t->taskDenominator());
    });
    $keep = array();   // the GearmanTask objects must live until runTasks() is done
    foreach (array_slice($argv, 2) as $h) $keep[] = $c->addTaskStatus($h);
    $ok = $c->runTasks();
    out(array("ok" => $ok, "got" => $got));
    break;
default:
    fwrite(STDERR, "unknown command $cmd\n");
    exit(2);
}
