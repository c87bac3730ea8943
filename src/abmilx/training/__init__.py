"""The training engine: one trainer for every run kind and the `Task` protocol it drives
(`task`), with the shared pieces (bags, optimiser and schedule, losses, EMA, run files,
prediction). The kinds themselves live in their stages and are found by name through
`abmilx.kinds`. Import the modules directly; this package re-exports nothing, so that importing
one piece does not load the whole engine."""
