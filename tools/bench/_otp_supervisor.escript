#!/usr/bin/env escript
%% The reference point for agent restarts: an Erlang/OTP one_for_one supervisor owning one
%% agent through a {packet, 4} port, as the seed's design does.
%%
%% Usage: escript _otp_supervisor.escript EXECUTABLE ARG...
%% Prints "ready OSPID" when a (re)started agent's first frame arrives, so the bench can
%% time SIGKILL -> first frame exactly as it does for osup-mp. Reads nothing; the bench
%% stops it by closing stdin.
-module(otp_bench).
-mode(compile).
-behaviour(supervisor).
-export([main/1, init/1, start_agent/2, agent/2]).

main([Exe | Args]) ->
    {ok, _} = supervisor:start_link({local, otp_bench_sup}, ?MODULE, {Exe, Args}),
    io:format("supervisor up~n"),
    io:get_line(""),  % EOF on stdin: the bench is done
    halt(0).

init({Exe, Args}) ->
    Flags = #{strategy => one_for_one, intensity => 1000, period => 1},
    Child = #{id => agent, start => {?MODULE, start_agent, [Exe, Args]},
              restart => permanent, shutdown => 1000, type => worker},
    {ok, {Flags, [Child]}}.

start_agent(Exe, Args) ->
    {ok, spawn_link(?MODULE, agent, [Exe, Args])}.

agent(Exe, Args) ->
    Port = open_port({spawn_executable, Exe},
                     [{packet, 4}, binary, {args, Args}, exit_status, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    first_frame(Port, OsPid).

first_frame(Port, OsPid) ->
    receive
        {Port, {data, _}} ->
            io:format("ready ~p~n", [OsPid]),
            serve(Port);
        {Port, {exit_status, Status}} ->
            exit({agent_exited, Status})
    end.

serve(Port) ->
    receive
        {Port, {data, _}} -> serve(Port);
        {Port, {exit_status, Status}} -> exit({agent_exited, Status})
    end.
