-- Tandem: the per-entity parts of the apply and write-back batches (SQL Server), filled at
-- run time with the entity's table, its columns and their types as the catalog gives them.
-- Placeholders: {{table}} and column names are quoted as [name]; {{entity_lit}} is N'...'.
-- A row arrives as a JSON array in the order of {{with_row}} and is typed by OPENJSON ...
-- WITH, wrapped in one more array: OPENJSON makes a row of each element of an array, so
-- [[...]] is one row whose paths $[0], $[1]... are the values (OPENJSON over the bare array
-- would make one row per value); {{row_proj}} converts what WITH cannot read directly (bytes from 0x-hex, datetime
-- through datetime2(7)). A key arrives as its text (a JSON array, e.g. [17] or ["X",2]) and is
-- typed by {{with_key}}.

-- name: native_key
-- The key as the capture trigger writes it (FOR JSON of the typed key columns), to find this
-- record's changes in the outbox.
IF @entity = {{entity_lit}}
    SELECT @native = CONVERT(nvarchar(max), (SELECT {{native_key_k}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
    FROM OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k;

-- name: given_key
-- The record's key here when the other side gives it: the row's key columns, typed, as text.
IF @entity = {{entity_lit}}
    SELECT @given = {{canonical_key_r}}
    FROM (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r;

-- name: lock
IF @entity = {{entity_lit}}
    SELECT @found = 1
    FROM {{table}} AS t WITH (UPDLOCK, HOLDLOCK)
    JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};

-- name: winner_case
-- Who wins a conflict against this side's changes in @pending (as conflict_winner in Rust): a
-- change tandem's own apply caused (derived: a cascade, a trigger's effect) loses to a user's
-- change; otherwise the policy decides, and ties go to A, so both sides decide the same way.
-- Not per entity: apply.sql uses it where it resolves a conflict (winner_case).
CASE
    WHEN @derived = 1 AND EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN {{here_lit}}
    WHEN @derived = 0 AND NOT EXISTS (SELECT 1 FROM @pending WHERE derived = 0) THEN {{incoming_lit}}
    WHEN @policy = 'a_wins' THEN 'A' WHEN @policy = 'b_wins' THEN 'B'
    WHEN @captured_at > @local_at THEN {{incoming_lit}}
    WHEN @captured_at < @local_at THEN {{here_lit}}
    ELSE 'A' END

-- name: natural_holder
-- The row here, other than the record's own (@key), that holds the incoming values (@row) of
-- the other side's key (a natural unique key here, where this side draws its keys), locked: its
-- key as text in @holder (as natural_holder on PostgreSQL). Only for an entity nothing refers
-- to, without a soft delete here (sql.rs).
IF @entity = {{entity_lit}}
    SELECT TOP (1) @holder = {{canonical_key_t}}
    FROM {{table}} AS t WITH (UPDLOCK, HOLDLOCK)
    CROSS JOIN (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r
    WHERE {{t_r_natural_join}}
      AND NOT EXISTS (SELECT 1 FROM OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k
                      WHERE {{t_k_join}});

-- name: holds_natural
-- The record's row here (@key), locked: @found = 1 if it is there, and @holds = 1 if it holds
-- the incoming values (@row) of the other side's key (a natural unique key here, where this
-- side draws its keys; as holds_natural on PostgreSQL).
IF @entity = {{entity_lit}}
    SELECT @found = 1, @holds = CASE WHEN {{t_r_natural_join}} THEN 1 ELSE 0 END
    FROM {{table}} AS t WITH (UPDLOCK, HOLDLOCK)
    JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}
    CROSS JOIN (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r;

-- name: requeue
-- A record the other side moved onto a key a local record holds, whose move lost the conflict,
-- stays here under its old key (@key): its row is queued as an update, so it travels back and
-- puts the record back where this side keeps it (as bulk.sql's requeue for `verify --repair`).
IF @entity = {{entity_lit}}
    INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image)
    SELECT {{entity_lit}}, 'U', x.k, LEFT(x.k, 400), x.img
    FROM (SELECT CONVERT(nvarchar(max), (SELECT {{native_key_k}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                 {{image_t}} AS img
          FROM {{table}} AS t
          JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}) AS x;

-- name: children_resend
-- A delete from the other side lost here to a newer change of the parent record (@entity
-- {{parent_lit}}, its key here @here): the other side creates the parent again, under a new
-- key where its keys are generated, and its children there that outlived the delete (no
-- foreign key) still name the old one. This side's rows of {{entity_lit}} under it (ref column
-- {{ref}}) travel again as inserts, marked derived (the consequence of a change already
-- decided: they never win a conflict against a user's change), and move there under the
-- parent. Only the rows the entity shows here ({{visible}}). Where this side gives the
-- child's key by values ({{key_given}} = 1), a child whose newest change pending here is an
-- insert or an update travels again as an update: an insert from here onto a live link there
-- would name a new record under a reused key, and its pending changes may have reached the
-- other side already, their replies lost, and settle there as stale, which left it under the
-- old parent there (simulation's full workload, seeds 76362 and 117946). Not one whose newest
-- is a delete: the row is here, so that delete lost at the other side, its reply lost, and it
-- carries no image (simulation, seed 1264): it travels as an insert. Where its key is
-- generated, it travels again as an insert all the same (seed 8748).
IF @entity = {{parent_lit}}
    INSERT INTO {{schema}}.[outbox] (entity, op, [key], key_prefix, image, derived)
    SELECT {{entity_lit}},
           CASE WHEN {{key_given}} = 1
                     AND EXISTS (SELECT 1
                                 FROM (SELECT TOP (1) o.op FROM {{schema}}.[outbox] AS o
                                       WHERE o.entity = {{entity_lit}} AND o.key_prefix = LEFT(x.k, 400)
                                         AND o.[key] = x.k AND o.suspended = 0
                                       ORDER BY o.seq DESC) AS n
                                 WHERE n.op <> 'D')
                THEN 'U' ELSE 'I' END,
           x.k, LEFT(x.k, 400), x.img, 1
    FROM (SELECT CONVERT(nvarchar(max), (SELECT {{t_key_json}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS k,
                 {{image_t}} AS img
          FROM {{table}} AS t
          JOIN OPENJSON(N'[' + @here + N']') WITH ([v] {{ref_input}} '$[0]') AS p ON t.{{ref}} = p.[v]
          WHERE {{visible}}) AS x;

-- name: exists
-- Whether the record's row is here (write-back of a stale report); no lock: a delete racing
-- this read is captured, and travels.
IF @entity = {{entity_lit}}
    SELECT @found = 1
    FROM {{table}} AS t
    JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};

-- name: update
-- Writes nothing when the row already holds these values (no echo, no empty updates): the
-- columns are compared as FOR JSON text in a binary collation, so NULL, '' and case differ.
IF @entity = {{entity_lit}}
BEGIN
    UPDATE t SET {{set_list}}
    FROM {{table}} AS t
    JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}
    CROSS JOIN (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r
    WHERE CONVERT(nvarchar(max), (SELECT {{t_set_cols}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2
       <> CONVERT(nvarchar(max), (SELECT {{r_set_cols}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2;
    SET @n = @@ROWCOUNT;
END;

-- name: insert
-- The last statement learns the key the row got: the given key, SCOPE_IDENTITY() for an IDENTITY
-- key, or (a key from another default) what OUTPUT ... INTO returned, checked to be there.
IF @entity = {{entity_lit}}
BEGIN
    {{identity_on}}INSERT INTO {{table}} ({{cols}})
    {{output_key}}SELECT {{r_cols}}
    FROM (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r;
    {{identity_off}}
    {{key_back}}
END;

-- name: insert_key_from
-- key_from: the new row gets the key tandem draws ({{key_draw}}: the next value of the
-- configured sequence, or one more than the largest key under a table lock held until the
-- batch commits, so a legacy application numbering with max+1 waits rather than collides).
IF @entity = {{entity_lit}}
BEGIN
    {{key_draw}}
    INSERT INTO {{table}} ({{key_col}}{{cols_after_key}})
    SELECT @new_key{{r_cols_after_key}}
    FROM (SELECT {{row_proj}} FROM OPENJSON(N'[' + @row + N']') WITH ({{with_row}}) AS j) AS r;
    INSERT INTO @ins (k) VALUES (N'[' + CONVERT(nvarchar(40), @new_key) + N']');
END;

-- name: key_from_sequence
SET @new_key = NEXT VALUE FOR {{sequence}};

-- name: key_from_max
SELECT @new_key = ISNULL(MAX({{key_col}}), 0) + 1 FROM {{table}} WITH (TABLOCKX, HOLDLOCK);

-- name: insert_defaults
IF @entity = {{entity_lit}}
BEGIN
    INSERT INTO {{table}}
    {{output_key}}DEFAULT VALUES;
    {{key_back}}
END;

-- name: delete
IF @entity = {{entity_lit}}
BEGIN
    DELETE t FROM {{table}} AS t
    JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}};
    SET @n = @@ROWCOUNT;
END;

-- name: soft_delete
-- `soft_delete` at this side: a delete marks the row rather than deleting it: the time
-- (CURRENT_TIMESTAMP), or the flag's deleted value, which the change carries in its row (at
-- position {{mark_at}}: values travel as data, never as SQL text). A row marked already is
-- left as it is.
IF @entity = {{entity_lit}}
BEGIN
    UPDATE t SET t.{{mark}} = {{mark_deleted}}
    FROM {{table}} AS t
    JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}
    CROSS JOIN (SELECT {{mark_proj}} AS [v] FROM OPENJSON(N'[' + @row + N']') WITH ([v] {{mark_input}} '$[{{mark_at}}]') AS j) AS s
    WHERE {{mark_live}};
    SET @n = @@ROWCOUNT;
END;

-- name: peer_update
-- Fills the table's peer_id_column with the other side's key (only when it differs).
IF @entity = {{entity_lit}}
BEGIN
    EXEC sys.sp_set_session_context N'tandem.applying', {{table_ctx_lit}};
    UPDATE t SET t.{{peer_col}} = p.[v]
    FROM {{table}} AS t
    JOIN OPENJSON(N'[' + @key + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}
    CROSS JOIN (SELECT {{peer_proj}} AS [v] FROM OPENJSON(N'[' + @peer_value + N']') WITH ([v] {{peer_input}} '$[0]') AS j) AS p
    WHERE CONVERT(nvarchar(max), (SELECT t.{{peer_col}} AS [v] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2
       <> CONVERT(nvarchar(max), (SELECT p.[v] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2;
    EXEC sys.sp_set_session_context N'tandem.applying', NULL;
END;

-- name: drop_duplicate
-- A second copy of a record (@dup, its key here), left by a lost reply, goes (see write_back.sql);
-- not while rows here refer to it (one NOT EXISTS per child table, filled in by sql.rs), nor with a
-- soft delete here (sql.rs).
IF @entity = {{entity_lit}}
BEGIN
    SELECT @native = CONVERT(nvarchar(max), (SELECT {{native_key_k}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))
    FROM OPENJSON(N'[' + @dup + N']') WITH ({{with_key}}) AS k;
    IF NOT EXISTS (SELECT 1 FROM {{schema}}.[outbox]
                   WHERE entity = @entity AND key_prefix = LEFT(@native, 400) AND [key] = @native)
    BEGIN
        EXEC sys.sp_set_session_context N'tandem.applying', {{table_ctx_lit}};
        DELETE t FROM {{table}} AS t
        JOIN OPENJSON(N'[' + @dup + N']') WITH ({{with_key}}) AS k ON {{t_k_join}}{{no_children}};
        IF @@ROWCOUNT > 0
        BEGIN
            UPDATE {{schema}}.[id_map] SET deleted = 1, updated_at = SYSDATETIMEOFFSET()
            WHERE entity = @entity AND {{own}} = @dup;
            INSERT INTO @warnings (n, kind, dup) VALUES (@n, 'D', @dup);
        END;
        EXEC sys.sp_set_session_context N'tandem.applying', NULL;
    END;
END;

-- name: in_flight
-- Which of these records (@P1: a JSON array of this side's keys as text) still have changes
-- in the outbox, pending or suspended.
SELECT q.k
FROM OPENJSON(@P1) WITH (k nvarchar(max) '$') AS q
CROSS APPLY (SELECT CONVERT(nvarchar(max), (SELECT {{native_key_k}} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) COLLATE Latin1_General_100_BIN2 AS native
             FROM OPENJSON(N'[' + q.k + N']') WITH ({{with_key}}) AS k) AS n
WHERE EXISTS (SELECT 1 FROM {{schema}}.[outbox] AS o
              WHERE o.entity = {{entity_lit}} AND o.key_prefix = LEFT(n.native, 400) AND o.[key] = n.native);
