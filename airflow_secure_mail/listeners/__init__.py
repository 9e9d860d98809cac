"""The listener plugin: DAG import errors and failures of DAGs with no alert of their own, by secure mail.

Registered through the ``airflow.plugins`` entry point (:mod:`.plugin`); off until ``[secure_mail]
listener_to`` is set (:mod:`.config`). :mod:`.import_errors` mails broken DAG files, :mod:`.catch_all` folds
failures into digests, :mod:`.mailer` is their one way out through the pipeline, :mod:`.background` the
thread that sends import-error mails and looks for resolved files. Nothing is imported here: the
plugins manager imports :mod:`.plugin` in every Airflow component.
"""
